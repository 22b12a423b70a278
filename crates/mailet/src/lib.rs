//! The mailet API: what a matcher or mailet sees of a mail and of the server.
//!
//! This crate is small, documented and stable so that a user crate can depend on it alone to
//! write its own matchers and mailets. It performs no I/O: message bodies are read through the
//! [`BodySource`] trait that the storage layer implements, and everything a mailet may ask of the
//! server goes through [`MailetContext`].
//!
//! A mail flows through the processor tree of the SpoolManager. A [`Matcher`] picks the
//! recipients a [`Mailet`] applies to; the mailet then acts on the [`Mail`] and may change its
//! [`Mail::state`] to move it to another processor, or to [`state::GHOST`] to end its
//! processing.
#![deny(missing_docs)]

mod address;
mod attribute;
mod component;
mod mail;
mod message;
pub mod state;

pub use address::{check_domain, AddressError, MailAddress, MAX_DOMAIN, MAX_LOCAL_PART};
pub use attribute::AttributeValue;
pub use component::{
    Mailet, MailetConfig, MailetContext, MailetError, Matcher, MatcherConfig, UserRecord,
};
pub use mail::{Envelope, Mail};
pub use message::{
    header_section_len, BodySource, MemoryBody, Message, MessageReader, MAX_HEADER_SECTION,
};
