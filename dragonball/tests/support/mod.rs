//! Shared helpers of the dragonball integration tests.

pub mod rv_guest;
