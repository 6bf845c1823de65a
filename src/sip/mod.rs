//! SIP messages as drachtio delivers them: parsing, header values, digest authentication,
//! and building responses and requests.

pub mod builder;
pub mod message;

pub use builder::{reason_phrase, RequestBuilder, ResponseBuilder};
pub use message::{header_name_eq, split_header_list, SipError, SipMessage, StartLine};
