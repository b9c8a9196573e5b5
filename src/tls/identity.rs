//! What a client certificate says about its holder: the subject as an
//! RFC 2253 string (the form nats-server users write in `verify_and_map`
//! configurations), SAN e-mail addresses and SAN DNS names; and matching a
//! configured distinguished name against it.

use x509_parser::asn1_rs::{Class, Oid};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

/// One attribute of a relative distinguished name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnAttr {
    /// Dotted attribute type, e.g. "2.5.4.3" for CN.
    pub oid: String,
    /// The value as text, when it is a string type we can decode.
    pub text: Option<String>,
    /// The value's DER encoding (tag, length, content), for `#hex` forms.
    pub raw: Vec<u8>,
}

/// The identity a verified client certificate carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// Subject in RFC 2253 form, most specific RDN first: "CN=alice,O=Acme".
    pub subject: String,
    /// SAN rfc822Name entries, in certificate order.
    pub emails: Vec<String>,
    /// SAN dNSName entries, in certificate order.
    pub dns_names: Vec<String>,
    /// The subject's RDNs in the same order as `subject`.
    pub rdns: Vec<Vec<DnAttr>>,
}

/// Attribute type keywords: those RFC 2253 defines plus the two more that
/// Go's `pkix.Name.String` (and so nats-server) prints by name.
const KEYWORDS: &[(&str, &str)] = &[
    ("CN", "2.5.4.3"),
    ("L", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("C", "2.5.4.6"),
    ("STREET", "2.5.4.9"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("SERIALNUMBER", "2.5.4.5"),
    ("POSTALCODE", "2.5.4.17"),
];

/// Extra spellings accepted when *parsing* a configured DN (OpenSSL's
/// `emailAddress` and friends); they are never printed.
const ALIASES: &[(&str, &str)] = &[
    ("E", "1.2.840.113549.1.9.1"),
    ("EMAIL", "1.2.840.113549.1.9.1"),
    ("EMAILADDRESS", "1.2.840.113549.1.9.1"),
    ("S", "2.5.4.8"),
];

/// Parse a DER certificate into the identity it carries. `None` when the
/// certificate cannot be parsed (rustls/webpki will normally have rejected
/// such a certificate already).
pub fn identity_from_der(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut rdns: Vec<Vec<DnAttr>> = cert
        .subject()
        .iter()
        .map(|rdn| rdn.iter().map(attr_of).collect())
        .collect();
    // RFC 2253 writes the last RDN of the sequence first.
    rdns.reverse();
    let subject = format_rdns(&rdns);
    let mut emails = Vec::new();
    let mut dns_names = Vec::new();
    // A malformed SAN extension only loses the SAN identities; the subject
    // is still usable.
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::RFC822Name(e) => emails.push((*e).to_string()),
                GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                _ => {}
            }
        }
    }
    Some(CertIdentity {
        subject,
        emails,
        dns_names,
        rdns,
    })
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo, lower-case hex: the
/// fingerprint nats-server's `pinned_certs` lists.
pub fn spki_sha256_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    Some(hex(digest.as_ref()))
}

fn attr_of(atv: &AttributeTypeAndValue<'_>) -> DnAttr {
    let value = atv.attr_value();
    let tag = value.tag().0;
    let universal_primitive = value.class() == Class::Universal && !value.header.is_constructed();
    let text = match tag {
        // UTF8String, NumericString, PrintableString, IA5String
        12 | 18 | 19 | 22 => atv.as_str().ok().map(str::to_string),
        // T61String: treated as Latin-1, as most decoders do.
        20 => Some(value.data.iter().map(|&b| b as char).collect()),
        // BMPString: UTF-16BE.
        30 if value.data.len() % 2 == 0 => {
            let units: Vec<u16> = value
                .data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32BE.
        28 if value.data.len() % 4 == 0 => value
            .data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    };
    let raw = if universal_primitive && tag < 31 {
        let mut raw = vec![tag as u8];
        push_der_len(&mut raw, value.data.len());
        raw.extend_from_slice(value.data);
        raw
    } else {
        value.data.to_vec()
    };
    DnAttr {
        oid: oid_string(atv.attr_type()),
        text: if universal_primitive { text } else { None },
        raw,
    }
}

fn oid_string(oid: &Oid<'_>) -> String {
    oid.to_id_string()
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn keyword_for(oid: &str) -> Option<&'static str> {
    KEYWORDS.iter().find(|(_, o)| *o == oid).map(|(k, _)| *k)
}

fn oid_for_type(t: &str) -> Option<String> {
    let upper = t.to_ascii_uppercase();
    if let Some((_, oid)) = KEYWORDS
        .iter()
        .chain(ALIASES)
        .find(|(k, _)| *k == upper.as_str())
    {
        return Some((*oid).to_string());
    }
    let dotted = upper.strip_prefix("OID.").unwrap_or(&upper);
    let valid = !dotted.is_empty()
        && dotted
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()));
    valid.then(|| dotted.to_string())
}

/// RFC 2253 string for RDNs already in RFC 2253 order.
fn format_rdns(rdns: &[Vec<DnAttr>]) -> String {
    let mut out = String::new();
    for (i, rdn) in rdns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match (keyword_for(&attr.oid), &attr.text) {
                (Some(kw), Some(text)) => {
                    out.push_str(kw);
                    out.push('=');
                    escape_value(text, &mut out);
                }
                // Unknown types (and undecodable values) use the dotted
                // OID and the hex of the DER value, as RFC 2253 prescribes.
                _ => {
                    out.push_str(&attr.oid);
                    out.push_str("=#");
                    out.push_str(&hex(&attr.raw));
                }
            }
        }
    }
    out
}

fn escape_value(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            // Control characters as \HH so a subject can never break a log
            // line or smuggle a separator.
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push('\\');
                out.push_str(&hex(&[c as u8]));
            }
            c => out.push(c),
        }
    }
}

/// A value as written in a configured DN.
#[derive(Debug, PartialEq)]
enum ConfValue {
    Text(String),
    /// `#hex`: a DER encoding.
    Der(Vec<u8>),
}

/// Parse an RFC 2253 string into (oid, value) pairs. RDN grouping (`+`
/// versus `,`) is not kept: matching is by the set of attributes.
fn parse_dn(s: &str) -> Option<Vec<(String, ConfValue)>> {
    let mut attrs = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        // Attribute type, up to '='.
        let eq = s[i..].find('=')? + i;
        let oid = oid_for_type(s[i..eq].trim())?;
        i = eq + 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let value;
        if bytes.get(i) == Some(&b'#') {
            let end = s[i..].find([',', '+', ';']).map_or(s.len(), |e| e + i);
            value = ConfValue::Der(unhex(s[i + 1..end].trim_end())?);
            i = end;
        } else if bytes.get(i) == Some(&b'"') {
            // Quoted value: everything up to the closing quote, with the
            // usual backslash escapes.
            let mut buf = Vec::new();
            i += 1;
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => i = unescape(bytes, i, &mut buf)?,
                    &b => {
                        buf.push(b);
                        i += 1;
                    }
                }
            }
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            value = ConfValue::Text(String::from_utf8(buf).ok()?);
        } else {
            let mut buf = Vec::new();
            // Length of `buf` up to its last escaped byte: trailing
            // spaces before that point are data, after it are padding.
            let mut keep = 0;
            while let Some(&b) = bytes.get(i) {
                match b {
                    b',' | b'+' | b';' => break,
                    b'\\' => {
                        i = unescape(bytes, i, &mut buf)?;
                        keep = buf.len();
                    }
                    _ => {
                        buf.push(b);
                        i += 1;
                    }
                }
            }
            while buf.len() > keep && buf.last() == Some(&b' ') {
                buf.pop();
            }
            value = ConfValue::Text(String::from_utf8(buf).ok()?);
        }
        attrs.push((oid, value));
        match bytes.get(i) {
            None => break,
            Some(b',' | b'+' | b';') => i += 1,
            Some(_) => return None,
        }
    }
    Some(attrs)
}

/// Decode `\X` or `\HH` at `bytes[i]` (which is the backslash) into `buf`.
fn unescape(bytes: &[u8], i: usize, buf: &mut Vec<u8>) -> Option<usize> {
    let a = *bytes.get(i + 1)?;
    if let Some(&b) = bytes.get(i + 2)
        && a.is_ascii_hexdigit()
        && b.is_ascii_hexdigit()
    {
        let pair = [a, b];
        let s = std::str::from_utf8(&pair).ok()?;
        buf.push(u8::from_str_radix(s, 16).ok()?);
        return Some(i + 3);
    }
    buf.push(a);
    Some(i + 2)
}

fn value_matches(conf: &ConfValue, attr: &DnAttr) -> bool {
    match conf {
        ConfValue::Text(t) => attr.text.as_deref() == Some(t.as_str()),
        ConfValue::Der(d) => *d == attr.raw,
    }
}

/// Does a configured user name, written as an RFC 2253 DN, name this
/// certificate's subject? The exact string matches; otherwise both are
/// compared attribute by attribute, ignoring attribute order and the case
/// of attribute types (nats-server also matches DNs regardless of order).
pub fn dn_matches(configured: &str, id: &CertIdentity) -> bool {
    if configured == id.subject {
        return true;
    }
    let Some(conf) = parse_dn(configured) else {
        return false;
    };
    let cert: Vec<&DnAttr> = id.rdns.iter().flatten().collect();
    if conf.len() != cert.len() || conf.is_empty() {
        return false;
    }
    // Multiset match: each configured attribute consumes one certificate
    // attribute. The lists are a handful of entries long.
    let mut used = vec![false; cert.len()];
    conf.iter().all(|(oid, v)| {
        let found = cert
            .iter()
            .enumerate()
            .position(|(k, a)| !used[k] && a.oid == *oid && value_matches(v, a));
        match found {
            Some(k) => {
                used[k] = true;
                true
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(oid: &str, text: &str) -> DnAttr {
        let mut raw = vec![12u8];
        push_der_len(&mut raw, text.len());
        raw.extend_from_slice(text.as_bytes());
        DnAttr {
            oid: oid.into(),
            text: Some(text.into()),
            raw,
        }
    }

    fn ident(rdns: Vec<Vec<DnAttr>>) -> CertIdentity {
        CertIdentity {
            subject: format_rdns(&rdns),
            rdns,
            ..Default::default()
        }
    }

    #[test]
    fn formats_rfc2253_with_escapes() {
        let id = ident(vec![
            vec![attr("2.5.4.3", "alice, jr")],
            vec![attr("2.5.4.11", "#ops "), attr("2.5.4.10", "Acme+Co")],
            vec![attr("1.2.840.113549.1.9.1", "a@b")],
        ]);
        assert_eq!(
            id.subject,
            "CN=alice\\, jr,OU=\\#ops\\ +O=Acme\\+Co,1.2.840.113549.1.9.1=#0c03614062"
        );
    }

    #[test]
    fn control_characters_are_hex_escaped() {
        let id = ident(vec![vec![attr("2.5.4.3", "a\nb")]]);
        assert_eq!(id.subject, "CN=a\\0ab");
        assert!(dn_matches("CN=a\\0ab", &id));
    }

    #[test]
    fn dn_matching() {
        let id = ident(vec![
            vec![attr("2.5.4.3", "alice")],
            vec![attr("2.5.4.10", "Acme, Inc")],
        ]);
        assert_eq!(id.subject, "CN=alice,O=Acme\\, Inc");
        assert!(dn_matches("CN=alice,O=Acme\\, Inc", &id));
        assert!(dn_matches("cn=alice, o=Acme\\2C Inc", &id));
        assert!(dn_matches("O=\"Acme, Inc\",CN=alice", &id));
        assert!(dn_matches("OID.2.5.4.3=alice,2.5.4.10=Acme\\, Inc", &id));
        assert!(dn_matches("CN=#0c05616c696365,O=Acme\\, Inc", &id));
        assert!(!dn_matches("CN=alice", &id));
        assert!(!dn_matches("CN=Alice,O=Acme\\, Inc", &id));
        assert!(!dn_matches("CN=alice,O=Acme\\, Inc,OU=x", &id));
        assert!(!dn_matches("alice", &id));
        assert!(!dn_matches("", &id));
        assert!(!dn_matches("FOO=alice,O=Acme", &id));
        assert!(!dn_matches("CN=#zz", &id));
    }

    #[test]
    fn parse_dn_never_panics_on_odd_input() {
        for s in [
            "=",
            "CN=",
            "CN=\\",
            "CN=\\4",
            "CN=\"abc",
            "CN=a,",
            ",",
            "CN=a+",
            "CN=é\\é",
            "CN=\"a\"b",
            "CN=#",
            "CN=#0",
            "CN= ",
            "OID.=x",
            "1..2=x",
        ] {
            let _ = parse_dn(s);
        }
        assert_eq!(
            parse_dn("CN=a\\ "),
            Some(vec![("2.5.4.3".into(), ConfValue::Text("a ".into()))])
        );
        assert_eq!(
            parse_dn("CN= a  "),
            Some(vec![("2.5.4.3".into(), ConfValue::Text("a".into()))])
        );
    }

    #[test]
    fn garbage_der_gives_none() {
        assert!(identity_from_der(b"not a certificate").is_none());
        assert!(spki_sha256_hex(&[0x30, 0x03, 0x02, 0x01]).is_none());
    }
}
