//! The REST routes that are not one gRPC method each (those are transcoded from their HTTP
//! rules, see [`crate::rest`]): bulk transfers, the event stream, the portfolio transfer and
//! the operations endpoints.

pub mod bulk;
pub mod events;
pub mod inbox;
pub mod ops;
pub mod users;
