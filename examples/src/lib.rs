//! Examples of embedding vessel; see the `[[example]]` targets.
//!
//! [`llm_router`] is a library module (the `llm_router` example and the
//! crate's tests use it): a Rust LLM router that embeds vessel for its
//! routing policy and its middleware.

pub mod llm_router;
