//! The suite's test bodies, generic over the [`Runtime`](crate::Runtime).
//! Each cites the paper's section (Liskov & Cowling 2012) where one applies.

mod bad_input;
mod reconfiguration;
mod reconnect;
mod shutdown;
mod view_change;

pub use bad_input::*;
pub use reconfiguration::*;
pub use reconnect::*;
pub use shutdown::*;
pub use view_change::*;
