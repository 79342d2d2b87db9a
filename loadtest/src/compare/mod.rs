//! `loadtest compare` (work in progress).
use crate::cli::CompareArgs;
pub fn main(_a: &CompareArgs) -> Result<(), String> {
    Err("compare: not implemented yet".into())
}
