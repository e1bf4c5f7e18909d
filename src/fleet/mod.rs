//! The fleet model: who each device of a fleet is, how its people use it, and the template mix.
pub mod behaviour;
pub mod identity;
pub mod mix;
