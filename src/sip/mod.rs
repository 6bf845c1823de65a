//! SIP messages as drachtio delivers them: parsing, header values, digest authentication,
//! and building responses and requests.

pub mod builder;
pub mod digest;
mod digest_strict;
pub mod header;
pub mod message;
pub mod uri;

pub use builder::{reason_phrase, RequestBuilder, ResponseBuilder};
pub use digest::{
    authorization_header, compute_response, parse_authorization, parse_challenge, www_authenticate, Challenge,
    DigestCredentials, DigestInput,
};
pub use header::{parse_contacts, replace_first_expires, top_via, CSeq, Contacts, NameAddr, Via};
pub use message::{header_name_eq, split_header_list, SipError, SipMessage, StartLine};
pub use uri::SipUri;
