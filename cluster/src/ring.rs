pub const MEMBERS_MAX: usize = 1024;
