//! One regbot's configuration (spec 6.2) and the REGISTER it sends (spec 6.3): Request-URI,
//! From/To, Contact rules, next hop, and the request bytes handed to drachtio.

use std::fmt;
use std::net::Ipv4Addr;

use super::addresses::PublicAddresses;
use super::mode::SentBy;
use crate::sip::RequestBuilder;
use crate::store::carriers::TrunkType;

/// Everything one regbot needs, derived from a carrier row and one of its gateways.
/// Values are the *effective* ones (defaults applied), so two specs are equal exactly when the
/// REGISTER they produce would be.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationSpec {
    pub voip_carrier_sid: String,
    pub sip_gateway_sid: String,
    /// The Call-ID of every REGISTER: the gateway sid (the Node "persistent Call-ID", shared by
    /// whichever SBC holds the role), or with `SBC_REGBOT_MODE=every` the gateway sid and this
    /// SBC's public address, so that each SBC's binding is its own.
    pub call_id: String,
    /// The leader, or this SBC with `SBC_REGBOT_MODE=every`.
    pub sent_by: SentBy,
    /// Gateway `ipv4`: an IP literal or a DNS name.
    pub host: String,
    pub port: Option<u16>,
    /// Gateway `protocol` as stored (`udp`, `tcp`, `tls`, `tls/srtp`).
    pub protocol: String,
    pub use_sips_scheme: bool,
    pub username: String,
    pub password: String,
    /// `register_sip_realm`, else the gateway host.
    pub sip_realm: String,
    /// `register_from_user`, else the username.
    pub from_user: String,
    /// `register_from_domain`, else the realm.
    pub from_domain: String,
    /// `register_public_ip_in_contact` or `JAMBONES_REGBOT_CONTACT_USE_IP`.
    pub use_public_ip_in_contact: bool,
    pub outbound_sip_proxy: Option<String>,
    pub trunk_type: TrunkType,
    /// The carrier's account `sip_realm`, looked up only when the public IP is not used.
    pub account_sip_realm: Option<String>,
}

// Hand-written so that the password never reaches a log line.
impl fmt::Debug for RegistrationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationSpec")
            .field("voip_carrier_sid", &self.voip_carrier_sid)
            .field("sip_gateway_sid", &self.sip_gateway_sid)
            .field("call_id", &self.call_id)
            .field("sent_by", &self.sent_by)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("sip_realm", &self.sip_realm)
            .field("from", &self.uri_in_from())
            .field("trunk_type", &self.trunk_type)
            .finish_non_exhaustive()
    }
}

impl RegistrationSpec {
    /// The spec as SBC `sbc` registers it in `SBC_REGBOT_MODE=every`: its own Call-ID
    /// (`<gateway sid>@<sbc>`, stable across restarts as long as the address is) and its own
    /// public address in the Contact, so that the carrier holds one binding per SBC.
    pub fn for_sbc(mut self, sbc: &str) -> RegistrationSpec {
        self.call_id = format!("{}@{sbc}", self.sip_gateway_sid);
        self.sent_by = SentBy::Every { sbc: sbc.to_string() };
        self.use_public_ip_in_contact = true;
        self
    }

    /// The gateway protocol up to the first `/`, lower-cased: `udp`, `tcp`, `tls`.
    pub fn transport(&self) -> String {
        let t = self.protocol.split('/').next().unwrap_or("").trim().to_ascii_lowercase();
        if t.is_empty() {
            "udp".to_string()
        } else {
            t
        }
    }

    /// `sips` only for TLS gateways flagged `use_sips_scheme`.
    pub fn scheme(&self) -> &'static str {
        if self.transport() == "tls" && self.use_sips_scheme {
            "sips"
        } else {
            "sip"
        }
    }

    pub fn is_reg_trunk(&self) -> bool {
        self.trunk_type == TrunkType::Reg
    }

    /// The spec 6.2 identity: a regbot whose key is unchanged keeps running untouched.
    /// Contains the password: compare it, never log it.
    pub fn identity(&self) -> String {
        let node = [
            self.voip_carrier_sid.as_str(),
            &self.host,
            &self.port.map(|p| p.to_string()).unwrap_or_default(),
            &self.username,
            &self.password,
            &self.sip_realm,
            &self.protocol,
            if self.use_sips_scheme { "true" } else { "false" },
            if self.use_public_ip_in_contact { "true" } else { "false" },
            self.outbound_sip_proxy.as_deref().unwrap_or(""),
            self.trunk_type.as_str(),
            &self.sip_gateway_sid,
            self.account_sip_realm.as_deref().unwrap_or(""),
            &self.from_user,
            &self.uri_in_from(),
        ]
        .join("|");
        // Every mode: the Call-ID (hence the SBC's address) is part of the registration.
        if self.call_id == self.sip_gateway_sid {
            node
        } else {
            format!("{node}|{}", self.call_id)
        }
    }

    /// `<carrier>:<host>:<port>`: a new regbot inherits the consecutive-failure count of an
    /// old one with the same key, so editing a failing carrier does not reset the count.
    pub fn failure_key(&self) -> String {
        format!("{}:{}:{}", self.voip_carrier_sid, self.host, self.port.map(|p| p.to_string()).unwrap_or_default())
    }

    /// `<user>@<realm>`, for logs and the status list.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.from_user, self.sip_realm)
    }

    /// `<scheme>:<sip_realm>`
    pub fn request_uri(&self) -> String {
        format!("{}:{}", self.scheme(), self.sip_realm)
    }

    /// `sip:<fromUser>@<fromDomain>`, used for both From and To.
    pub fn uri_in_from(&self) -> String {
        format!("sip:{}@{}", self.from_user, self.from_domain)
    }

    /// The `user@host` of the Contact, first rule that applies (spec 6.3): public address,
    /// account realm, system SIP domain, the registration realm. Without a known public
    /// address we write `localhost`, which drachtio replaces with its own address.
    pub fn contact_user_host(&self, public: Option<&PublicAddresses>, sip_domain: Option<&str>) -> String {
        let host = if self.use_public_ip_in_contact {
            public.and_then(|p| p.for_transport(&self.transport())).unwrap_or("localhost").to_string()
        } else if let Some(realm) = self.account_sip_realm.as_deref().filter(|r| !r.is_empty()) {
            realm.to_string()
        } else if let Some(domain) = sip_domain.filter(|d| !d.is_empty()) {
            domain.to_string()
        } else {
            self.sip_realm.clone()
        };
        format!("{}@{host}", self.from_user)
    }

    /// The next hop handed to drachtio: the outbound proxy, else the gateway. An IP literal
    /// gets its port (5060, or 5061 for TLS, when the row has none — Node wrote `:null`); a DNS
    /// name is left to drachtio's RFC 3263 resolution, as in Node.
    pub fn next_hop(&self) -> String {
        let transport = self.transport();
        if let Some(proxy) = self.outbound_sip_proxy.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            // Operators sometimes store the proxy as a URI already.
            let bare = strip_scheme(proxy);
            if bare.to_ascii_lowercase().contains(";transport=") {
                return format!("sip:{bare}");
            }
            return format!("sip:{bare};transport={transport}");
        }
        if self.host.parse::<Ipv4Addr>().is_ok() {
            let port = self.port.unwrap_or(if transport == "tls" { 5061 } else { 5060 });
            format!("sip:{}:{port};transport={transport}", self.host)
        } else {
            format!("sip:{};transport={transport}", self.host)
        }
    }

    /// True when the next hop names an IP literal (no DNS choice drachtio could make
    /// differently for a challenged retry).
    pub fn next_hop_is_ip_literal(&self) -> bool {
        match self.outbound_sip_proxy.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            Some(proxy) => {
                let bare = strip_scheme(proxy);
                let hostport = bare.split(';').next().unwrap_or("");
                let host = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
                let host = host.split(':').next().unwrap_or("");
                host.parse::<Ipv4Addr>().is_ok()
            }
            None => self.host.parse::<Ipv4Addr>().is_ok(),
        }
    }
}

fn strip_scheme(uri: &str) -> &str {
    let lower = uri.to_ascii_lowercase();
    if lower.starts_with("sips:") {
        &uri[5..]
    } else if lower.starts_with("sip:") {
        &uri[4..]
    } else {
        uri
    }
}

/// "domain or IPv4, optional `:port`", domain characters `[a-zA-Z0-9.-]` (spec 6.3).
pub fn valid_from_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// Which header carries the digest answer: `Authorization` after a 401,
/// `Proxy-Authorization` after a 407.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthHeader {
    Authorization,
    ProxyAuthorization,
}

impl AuthHeader {
    pub fn name(self) -> &'static str {
        match self {
            AuthHeader::Authorization => "Authorization",
            AuthHeader::ProxyAuthorization => "Proxy-Authorization",
        }
    }
}

/// The variable parts of one REGISTER.
#[derive(Debug, Clone)]
pub struct RegisterParams<'a> {
    pub cseq: u32,
    /// Our From tag, the same for every request of the regbot.
    pub from_tag: &'a str,
    /// 0 to de-register.
    pub expires: u64,
    /// From [`RegistrationSpec::contact_user_host`].
    pub contact_user_host: &'a str,
    pub user_agent: &'a str,
    pub authorization: Option<(AuthHeader, String)>,
}

/// The REGISTER as drachtio gets it. drachtio adds Via, Max-Forwards and Content-Length; the
/// headers are given in the order drachtio puts them on the wire anyway.
pub fn build_register(spec: &RegistrationSpec, p: &RegisterParams<'_>) -> Vec<u8> {
    let aor = spec.uri_in_from();
    let contact =
        format!("<{}:{};transport={}>;expires={}", spec.scheme(), p.contact_user_host, spec.transport(), p.expires);
    let mut builder = RequestBuilder::new("REGISTER", &spec.request_uri())
        .header("From", &format!("<{aor}>;tag={}", p.from_tag))
        .header("To", &format!("<{aor}>"))
        .header("Call-ID", &spec.call_id)
        .header("CSeq", &format!("{} REGISTER", p.cseq))
        .header("Contact", &contact)
        .header("Expires", &p.expires.to_string())
        .header("User-Agent", p.user_agent);
    if let Some((header, value)) = &p.authorization {
        builder = builder.header(header.name(), value);
    }
    builder.build()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn spec() -> RegistrationSpec {
        RegistrationSpec {
            voip_carrier_sid: "c1".into(),
            sip_gateway_sid: "g1".into(),
            call_id: "g1".into(),
            sent_by: SentBy::Leader,
            host: "192.0.2.7".into(),
            port: Some(5080),
            protocol: "udp".into(),
            use_sips_scheme: false,
            username: "alice".into(),
            password: "s3cret".into(),
            sip_realm: "sip.carrier.example".into(),
            from_user: "alice".into(),
            from_domain: "sip.carrier.example".into(),
            use_public_ip_in_contact: false,
            outbound_sip_proxy: None,
            trunk_type: TrunkType::StaticIp,
            account_sip_realm: None,
        }
    }

    #[test]
    fn every_sbc_registers_with_its_own_call_id_and_contact() {
        let public = PublicAddresses::from_hostports("udp/203.0.113.9:5062");
        let mut base = spec();
        base.account_sip_realm = Some("acct.example".into());
        let mine = base.clone().for_sbc("203.0.113.9:5062");
        assert_eq!(mine.call_id, "g1@203.0.113.9:5062");
        assert_eq!(mine.sent_by.sbc(), Some("203.0.113.9:5062"));
        assert_eq!(mine.contact_user_host(Some(&public), None), "alice@203.0.113.9:5062", "never the shared realm");
        assert_ne!(mine.identity(), base.clone().for_sbc("203.0.113.10:5060").identity());
        let p = RegisterParams {
            cseq: 1,
            from_tag: "t",
            expires: 60,
            contact_user_host: "alice@203.0.113.9:5062",
            user_agent: "ua",
            authorization: None,
        };
        let text = String::from_utf8(build_register(&mine, &p)).unwrap();
        assert!(text.contains("Call-ID: g1@203.0.113.9:5062\r\n"), "{text}");
    }

    #[test]
    fn transport_and_scheme_follow_the_gateway_protocol() {
        let mut s = spec();
        s.protocol = "tls/srtp".into();
        assert_eq!(s.transport(), "tls");
        assert_eq!(s.scheme(), "sip");
        s.use_sips_scheme = true;
        assert_eq!(s.scheme(), "sips");
        assert_eq!(s.request_uri(), "sips:sip.carrier.example");
        s.protocol = "TCP".into();
        assert_eq!(s.transport(), "tcp");
        assert_eq!(s.scheme(), "sip", "sips only with TLS");
    }

    #[test]
    fn contact_rules_first_match_wins() {
        let public = PublicAddresses::from_hostports("tcp/3.3.3.3:5060,udp/3.3.3.3:5060,tls/3.3.3.3:5071");
        let mut s = spec();
        s.account_sip_realm = Some("acct.example".into());
        // 2: the account realm, ahead of the system domain
        assert_eq!(s.contact_user_host(Some(&public), Some("sys.example")), "alice@acct.example");
        // 3: the system SIP domain
        s.account_sip_realm = None;
        assert_eq!(s.contact_user_host(Some(&public), Some("sys.example")), "alice@sys.example");
        // 4: the registration realm
        assert_eq!(s.contact_user_host(Some(&public), None), "alice@sip.carrier.example");
        // 1: the public address wins over everything, per transport
        s.use_public_ip_in_contact = true;
        s.account_sip_realm = Some("acct.example".into());
        assert_eq!(s.contact_user_host(Some(&public), Some("sys.example")), "alice@3.3.3.3:5060");
        s.protocol = "tls".into();
        assert_eq!(s.contact_user_host(Some(&public), None), "alice@3.3.3.3:5071");
        s.protocol = "tcp".into();
        assert_eq!(s.contact_user_host(Some(&public), None), "alice@3.3.3.3:5060", "TCP uses the UDP address");
        assert_eq!(s.contact_user_host(None, None), "alice@localhost");
    }

    #[test]
    fn next_hop_strings() {
        let mut s = spec();
        assert_eq!(s.next_hop(), "sip:192.0.2.7:5080;transport=udp");
        s.port = None;
        assert_eq!(s.next_hop(), "sip:192.0.2.7:5060;transport=udp", "missing port defaults to 5060");
        s.protocol = "tls".into();
        assert_eq!(s.next_hop(), "sip:192.0.2.7:5061;transport=tls", "and to 5061 for TLS");
        s.host = "sip.carrier.example".into();
        s.port = Some(5080);
        assert_eq!(s.next_hop(), "sip:sip.carrier.example;transport=tls", "DNS names are left to drachtio");
        assert!(!s.next_hop_is_ip_literal());
        s.outbound_sip_proxy = Some("10.1.1.1:5070".into());
        assert_eq!(s.next_hop(), "sip:10.1.1.1:5070;transport=tls");
        assert!(s.next_hop_is_ip_literal());
        s.outbound_sip_proxy = Some("sip:proxy.example;transport=tcp".into());
        assert_eq!(s.next_hop(), "sip:proxy.example;transport=tcp");
        assert!(!s.next_hop_is_ip_literal());
    }

    #[test]
    fn identity_changes_with_every_field_that_matters() {
        let base = spec();
        let mut other = spec();
        assert_eq!(base.identity(), other.identity());
        other.password = "new".into();
        assert_ne!(base.identity(), other.identity());
        let mut other = spec();
        other.from_domain = "other.example".into();
        assert_ne!(base.identity(), other.identity());
        let mut other = spec();
        other.account_sip_realm = Some("acct".into());
        assert_ne!(base.identity(), other.identity());
        assert_eq!(
            base.identity(),
            "c1|192.0.2.7|5080|alice|s3cret|sip.carrier.example|udp|false|false||static_ip|g1||alice|sip:alice@sip.carrier.example"
        );
        assert_eq!(base.failure_key(), "c1:192.0.2.7:5080");
        assert!(!format!("{base:?}").contains("s3cret"), "Debug hides the password");
    }

    #[test]
    fn from_domain_validation() {
        for ok in ["sip.example.com", "192.0.2.1", "a-b.example:5080", "x"] {
            assert!(valid_from_domain(ok), "{ok}");
        }
        for bad in ["", "sip example", "a@b", "host:", "host:12a", "host:123456", "ex_ample.com"] {
            assert!(!valid_from_domain(bad), "{bad}");
        }
    }

    #[test]
    fn register_request_bytes() {
        let s = spec();
        let sip = build_register(
            &s,
            &RegisterParams {
                cseq: 7,
                from_tag: "tag1",
                expires: 3600,
                contact_user_host: "alice@3.3.3.3:5060",
                user_agent: "Jambonz 0.9.6",
                authorization: Some((AuthHeader::ProxyAuthorization, "Digest x".into())),
            },
        );
        assert_eq!(
            String::from_utf8(sip).unwrap(),
            "REGISTER sip:sip.carrier.example SIP/2.0\r\n\
             From: <sip:alice@sip.carrier.example>;tag=tag1\r\n\
             To: <sip:alice@sip.carrier.example>\r\n\
             Call-ID: g1\r\n\
             CSeq: 7 REGISTER\r\n\
             Contact: <sip:alice@3.3.3.3:5060;transport=udp>;expires=3600\r\n\
             Expires: 3600\r\n\
             User-Agent: Jambonz 0.9.6\r\n\
             Proxy-Authorization: Digest x\r\n\
             Content-Length: 0\r\n\r\n"
        );
    }
}
