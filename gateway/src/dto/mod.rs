//! REST/JSON representations (proto3 JSON field names) and their proto conversions.

pub mod common;
pub mod contact;
pub mod table;

pub use contact::*;
