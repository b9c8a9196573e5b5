//! Creds files: a user JWT and its NKey seed between dashed marker lines,
//! as nsc writes them and the NATS clients read them.

use super::JwtError;

/// A marker line: at least three dashes, anything, at least three dashes.
fn is_marker(line: &str) -> bool {
    let l = line.trim_end_matches('\r');
    l.len() >= 6 && l.starts_with("---") && l.ends_with("---")
}

/// The characters a decorated value may have (the clients' `[\w\-.=]+`).
fn is_value(line: &str) -> bool {
    let l = line.trim_end_matches('\r');
    !l.is_empty()
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'='))
}

/// Every value framed by marker lines (marker, value, marker), in order.
fn decorated(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        if is_marker(lines[i])
            && is_value(lines[i + 1])
            && lines.get(i + 2).is_some_and(|l| is_marker(l))
        {
            out.push(lines[i + 1].trim_end_matches('\r'));
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// The user JWT and seed of a creds file: the first and second values
/// framed by dashed marker lines (`-----BEGIN NATS USER JWT-----` ...
/// `------END NATS USER JWT------`, then the `USER NKEY SEED` block), as
/// nats.go and async-nats find them. The seed must be a user seed.
pub fn parse_creds(text: &str) -> Result<(String, String), JwtError> {
    let values = decorated(text);
    let jwt = values
        .first()
        .ok_or_else(|| JwtError::Creds("no JWT block found".into()))?;
    let seed = values
        .get(1)
        .ok_or_else(|| JwtError::Creds("no NKey seed block found".into()))?;
    if !seed.starts_with("SU") {
        return Err(JwtError::Creds("the seed is not a user seed".into()));
    }
    nkeys::KeyPair::from_seed(seed)?;
    Ok((jwt.to_string(), seed.to_string()))
}

/// A creds file byte for byte as nsc (nats-io/jwt's FormatUserConfig)
/// writes it. `seed` must be a user seed.
pub fn format_creds(jwt: &str, seed: &str) -> Result<String, JwtError> {
    let seed = seed.trim();
    if !seed.starts_with("SU") {
        return Err(JwtError::Creds("the seed is not a user seed".into()));
    }
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    ))
}
