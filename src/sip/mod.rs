//! SIP messages as drachtio delivers them: parsing, header values, digest authentication,
//! and building responses and requests.

pub(crate) mod builder;
pub(crate) mod digest;
mod digest_strict;
pub(crate) mod header;
pub(crate) mod message;
pub(crate) mod uri;

pub use builder::{reason_phrase, RequestBuilder, ResponseBuilder};
pub use digest::{
    authorization_header, compute_response, parse_authorization, parse_challenge, www_authenticate, Challenge,
    DigestCredentials, DigestInput,
};
pub use header::{parse_contacts, replace_first_expires, top_via, CSeq, Contacts, NameAddr, Via};
pub use message::{header_name_eq, split_header_list, SipError, SipMessage, StartLine};
pub use uri::SipUri;
