//! The strict reading of Digest credentials (RFC 7616 §3.4, with the auth-param grammar of
//! RFC 7235 §2.1 and quoted-string of RFC 7230 §3.2.6):
//!
//! ```text
//! credentials = "Digest" 1*SP auth-param *( OWS "," OWS auth-param )
//! auth-param  = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! The registrar accepts an Authorization header only when this reading and the digest-utils
//! one (which the webhook payload must keep) give the same fields: a webhook that parses the
//! raw `headers.authorization` itself must never see another username than we checked.

use super::digest::DigestCredentials;

/// The credentials as RFC 7616 reads them; `username*` (RFC 8187) and an empty `algorithm`
/// have no reading the registrar could check, so they are refused.
pub(crate) fn strict_reading(value: &str) -> Result<DigestCredentials, &'static str> {
    let params = strict_params(value)?;
    let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    if get("username*").is_some() {
        return Err("username* is not supported");
    }
    let algorithm = match get("algorithm") {
        Some(a) if a.is_empty() => return Err("empty algorithm"),
        Some(a) => a,
        None => "MD5".to_string(),
    };
    Ok(DigestCredentials {
        username: get("username"),
        realm: get("realm"),
        nonce: get("nonce"),
        uri: get("uri"),
        algorithm,
        response: get("response"),
        qop: get("qop"),
        nc: get("nc"),
        cnonce: get("cnonce"),
        opaque: get("opaque"),
    })
}

/// Parameter names lower-cased, values with quoted-pairs resolved, in header order; `Err`
/// with the reason when the header does not match the grammar or names a parameter twice
/// (RFC 7235 §2.1: each parameter name occurs once).
fn strict_params(header: &str) -> Result<Vec<(String, String)>, &'static str> {
    let rest = header
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("Digest"))
        .map(|_| &header[6..])
        .ok_or("scheme is not Digest")?;
    let mut rest = rest.strip_prefix(' ').ok_or("no space after Digest")?.trim_start_matches(' ');
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        let name_len = rest.bytes().take_while(|&b| is_tchar(b)).count();
        if name_len == 0 {
            return Err("parameter without a name");
        }
        let name = rest[..name_len].to_ascii_lowercase();
        rest = rest[name_len..].trim_start_matches(is_ows);
        rest = rest.strip_prefix('=').ok_or("parameter without `=`")?.trim_start_matches(is_ows);
        let (value, after) = if rest.starts_with('"') {
            quoted(rest).ok_or("bad quoted string")?
        } else {
            let len = rest.bytes().take_while(|&b| is_tchar(b)).count();
            if len == 0 {
                return Err("parameter without a value");
            }
            (rest[..len].to_string(), &rest[len..])
        };
        if params.iter().any(|(n, _)| *n == name) {
            return Err("parameter given twice");
        }
        params.push((name, value));
        rest = after.trim_start_matches(is_ows);
        if rest.is_empty() {
            return Ok(params);
        }
        rest = rest.strip_prefix(',').ok_or("parameters not separated by a comma")?.trim_start_matches(is_ows);
    }
}

/// RFC 7230 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A quoted-string at the start of `text`: its content with quoted-pairs resolved and what
/// follows the closing quote. Control characters other than HTAB are not allowed (qdtext).
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &text[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                if escaped.is_ascii_control() && escaped != '\t' {
                    return None;
                }
                out.push(escaped);
            }
            c if c.is_ascii_control() && c != '\t' => return None,
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_tokens_quoted_strings_and_escapes() {
        assert_eq!(
            strict_params("digest  Username = \"a\\\"b, c\" ,nc=00000001,\tqop=auth"),
            Ok(p(&[("username", "a\"b, c"), ("nc", "00000001"), ("qop", "auth")]))
        );
    }

    #[test]
    fn a_quoted_string_is_one_value_whatever_it_holds() {
        assert_eq!(
            strict_params(r#"Digest opaque="x username=bob", username="alice""#),
            Ok(p(&[("opaque", "x username=bob"), ("username", "alice")]))
        );
    }

    #[test]
    fn refuses_what_has_no_single_reading() {
        for (bad, reason) in [
            ("Basic dXNlcjpwYXNz", "scheme is not Digest"),
            ("Digest\tusername=\"a\"", "no space after Digest"),
            ("Digest username=\"a\", username=\"b\"", "parameter given twice"),
            ("Digest username=\"a\" realm=\"r\"", "parameters not separated by a comma"),
            ("Digest username=\"a", "bad quoted string"),
            ("Digest username=\"a\u{1b}[2J\"", "bad quoted string"),
            ("Digest username=\"a\",, realm=\"r\"", "parameter without a name"),
            ("Digest username=", "parameter without a value"),
            ("Digest username", "parameter without `=`"),
            ("Digé", "scheme is not Digest"),
        ] {
            assert_eq!(strict_params(bad), Err(reason), "{bad:?}");
        }
    }
}
