pub mod postgres;
pub mod softkey;
