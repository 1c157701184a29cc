//! Examples of embedding vessel; see the `[[example]]` targets.
