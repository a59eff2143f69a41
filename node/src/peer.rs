//! TEMPORARY type-check shim; replaced by the real transport before commit.
#![allow(dead_code, unused_variables, clippy::all)]
use std::net::SocketAddr;
use std::rc::Rc;
use shoal_cluster::NodeId;
use crate::frame::FrameBuf;
pub struct PeerAddr { pub node: NodeId, pub base: SocketAddr, pub shards: u16 }
#[derive(Default)]
pub struct PeerOptions;
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct PeerError;
pub struct Peers;
impl Peers {
    pub fn new(me: NodeId, members: Vec<PeerAddr>, options: PeerOptions) -> Rc<Peers> { todo!() }
    pub fn send(self: &Rc<Self>, node: NodeId, shard: u16, frame: FrameBuf) -> Result<(), PeerError> { todo!() }
    pub fn is_up(&self, node: NodeId) -> bool { todo!() }
}
pub fn listen(addr: SocketAddr) -> Result<glommio::net::TcpListener, PeerError> { todo!() }
pub async fn serve(listener: glommio::net::TcpListener, max_payload: usize, on_frame: Rc<dyn Fn(Inbound)>, stop: impl std::future::Future<Output = ()>) { todo!() }
pub struct Inbound;
impl Inbound { pub fn request_id(&self) -> u64 { 0 } pub fn payload(&self) -> &[u8] { &[] } }
