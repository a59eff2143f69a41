#!/usr/bin/env bash
# Rebuilds vendor/glommio as the pristine glommio 0.9.0 crate plus the patch series beside this
# script, applied in order; with --check, rebuilds it in a scratch directory and fails, showing
# the difference, unless the committed vendor/glommio is exactly that. See README.md here.
set -euo pipefail

readonly CRATE=glommio
readonly VERSION=0.9.0
# The sha256 of glommio-0.9.0.crate, as the registry index records it (its "cksum" field).
readonly CRATE_SHA256=e1f8bc1fce949d18098dc0a4e861314e40351a0144ebf61e59bdb5254a2273b2

usage() {
  echo "usage: $0 [--check]" >&2
  echo "  (no option)  replace vendor/glommio with pristine $CRATE $VERSION + the series" >&2
  echo "  --check      exit 1, printing the difference, unless vendor/glommio is exactly that" >&2
}

die() {
  echo "apply.sh: $*" >&2
  exit 1
}

mode=rebuild
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  -h | --help) usage; exit 0 ;;
  *) usage; exit 2 ;;
esac
[ $# -le 1 ] || { usage; exit 2; }

series=$(cd "$(dirname "$0")" && pwd)
vendor=$(cd "$series/.." && pwd)/$CRATE
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The .crate file from cargo's download cache, fetched there by cargo itself if missing (cargo
# checks it against the registry index; this script checks it against the pinned sum too).
crate_file() {
  local cargo_home=${CARGO_HOME:-$HOME/.cargo} f
  for f in "$cargo_home"/registry/cache/*/"$CRATE-$VERSION.crate"; do
    if [ -f "$f" ] && [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$CRATE_SHA256" ]; then
      echo "$f"
      return
    fi
  done
  mkdir -p "$work/fetch/src"
  : >"$work/fetch/src/lib.rs"
  cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-pristine-$CRATE"
version = "0.0.0"
edition = "2021"

[dependencies]
$CRATE = "=$VERSION"

[workspace]
EOF
  cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml" >&2 \
    || die "cargo could not fetch $CRATE $VERSION from the registry (is it reachable?)"
  for f in "$cargo_home"/registry/cache/*/"$CRATE-$VERSION.crate"; do
    if [ -f "$f" ]; then
      echo "$f"
      return
    fi
  done
  die "cargo fetched $CRATE $VERSION but its .crate is not under $cargo_home/registry/cache"
}

crate=$(crate_file)
sum=$(sha256sum "$crate" | cut -d' ' -f1)
[ "$sum" = "$CRATE_SHA256" ] || die "$crate has sha256 $sum, expected $CRATE_SHA256"

tar -xzf "$crate" -C "$work"
tree=$work/$CRATE-$VERSION
[ -d "$tree" ] || die "$crate did not unpack to $CRATE-$VERSION/"

count=0
for patch in "$series"/[0-9][0-9][0-9][0-9]-*.patch; do
  [ -f "$patch" ] || continue
  # The ceiling keeps git from taking an enclosing repository for this tree's.
  (cd "$tree" && GIT_CEILING_DIRECTORIES="$work" git apply --whitespace=nowarn "$patch") \
    || die "$(basename "$patch") does not apply on top of the patches before it"
  count=$((count + 1))
done

exec_bits() {
  (cd "$1" && find . -type f -perm -u+x | LC_ALL=C sort)
}

case $mode in
  rebuild)
    rm -rf "$vendor"
    cp -a "$tree" "$vendor"
    echo "vendor/$CRATE rebuilt: pristine $CRATE $VERSION + $count patches"
    ;;
  check)
    [ -d "$vendor" ] || die "$vendor does not exist"
    rc=0
    diff -ruN "$tree" "$vendor" >"$work/diff" || rc=$?
    [ "$rc" -le 1 ] || die "diff failed comparing the trees"
    rc=0
    diff <(exec_bits "$tree") <(exec_bits "$vendor") >"$work/modes" || rc=$?
    [ "$rc" -le 1 ] || die "diff failed comparing executable bits"
    if [ -s "$work/diff" ] || [ -s "$work/modes" ]; then
      echo "apply.sh: vendor/$CRATE is not pristine $CRATE $VERSION + the $count patches" \
        "in vendor/$CRATE-patches; difference (expected, then committed):" >&2
      cat "$work/diff" >&2
      if [ -s "$work/modes" ]; then
        echo "executable files (expected <, committed >):" >&2
        cat "$work/modes" >&2
      fi
      exit 1
    fi
    echo "vendor/$CRATE is pristine $CRATE $VERSION + $count patches"
    ;;
esac
