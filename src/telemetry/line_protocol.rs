//! InfluxDB 1.x line protocol: `measurement,tag=v,… field="v",… <timestamp ns>`.
//!
//! The escaping rules are those InfluxDB 1.x applies (checked against a real `influxd`):
//!
//! * measurement: `,` and space are backslash-escaped;
//! * tag keys and values: `,`, `=` and space are backslash-escaped; a backslash is kept as it
//!   is, except that a tag value may not *end* with one (it would escape the separator that
//!   follows, and the whole batch is refused), so trailing backslashes are dropped;
//! * string field values: inside double quotes, `"` and `\` are backslash-escaped.
//!
//! Line breaks would end the point, so they are replaced by a space everywhere. (InfluxDB 1.6
//! tolerates them inside quoted strings, but the 1.x documentation says they are not supported,
//! and an alert message is shown on one line in the portal anyway.)

use std::fmt::Write as _;

/// Appends one point, followed by `\n`. Tags with an empty value are left out, as line
/// protocol has no way to write them; `tags` must already be sorted by key (InfluxDB asks
/// for that, it saves it the work).
pub(crate) fn write_point(
    out: &mut String,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, &str)],
    timestamp_ns: u128,
) {
    escape_into(out, measurement, &[',', ' ']);
    for (key, value) in tags {
        let value = value.trim_end_matches('\\');
        if value.is_empty() {
            continue;
        }
        out.push(',');
        escape_into(out, key, &[',', '=', ' ']);
        out.push('=');
        escape_into(out, value, &[',', '=', ' ']);
    }
    for (i, (key, value)) in fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        escape_into(out, key, &[',', '=', ' ']);
        out.push_str("=\"");
        escape_into(out, value, &['"', '\\']);
        out.push('"');
    }
    // Writing to a String cannot fail.
    let _ = writeln!(out, " {timestamp_ns}");
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(tags: &[(&str, &str)], fields: &[(&str, &str)]) -> String {
        let mut out = String::new();
        write_point(&mut out, "alerts", tags, fields, 1_700_000_000_000_000_001);
        out
    }

    #[test]
    fn a_plain_point_has_tags_fields_and_a_nanosecond_timestamp() {
        assert_eq!(
            point(&[("account_sid", "a1"), ("alert_type", "webhook-failure")], &[("message", "x returned 500")]),
            "alerts,account_sid=a1,alert_type=webhook-failure message=\"x returned 500\" 1700000000000000001\n"
        );
    }

    #[test]
    fn empty_tags_are_left_out_never_written_as_undefined() {
        assert_eq!(
            point(&[("account_sid", ""), ("alert_type", "t"), ("service_provider_sid", "")], &[("message", "m")]),
            "alerts,alert_type=t message=\"m\" 1700000000000000001\n"
        );
        assert_eq!(point(&[], &[("message", "m")]), "alerts message=\"m\" 1700000000000000001\n");
    }

    #[test]
    fn tag_values_escape_comma_equals_and_space_and_lose_a_trailing_backslash() {
        assert_eq!(
            point(&[("account_sid", "a b,c=d\\e\\\\")], &[("message", "m")]),
            "alerts,account_sid=a\\ b\\,c\\=d\\e message=\"m\" 1700000000000000001\n"
        );
    }

    #[test]
    fn string_fields_escape_quotes_and_backslashes_and_stay_on_one_line() {
        assert_eq!(
            point(&[], &[("message", "say \"hi\" C:\\dir\r\nnext"), ("detail", "d")]),
            "alerts message=\"say \\\"hi\\\" C:\\\\dir  next\",detail=\"d\" 1700000000000000001\n"
        );
    }
}
