//! The audit page.

use crate::server::State;
use axum::Router;
use std::sync::Arc;

pub fn routes() -> Router<Arc<State>> {
    Router::new()
}
