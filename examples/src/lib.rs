//! Examples built only on Synod's public API (the counter and the
//! multi-group demo arrive with the runtime issue).
#![deny(missing_docs)]
