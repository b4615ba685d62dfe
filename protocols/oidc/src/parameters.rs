//! The parameters of a request, as every endpoint reads them.

use crate::error::OAuthError;
use std::collections::HashMap;

/// Largest token accepted in any parameter or header.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Form or query parameters; a repeated parameter is an error (RFC 6749 §3.1).
pub fn parameters(raw: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} is repeated"
            )));
        }
    }
    Ok(out)
}

/// A required, non-empty parameter of at most [`MAX_TOKEN_LEN`] bytes.
pub(crate) fn required<'a>(
    params: &'a HashMap<String, String>,
    name: &str,
) -> Result<&'a str, OAuthError> {
    match params.get(name).map(String::as_str) {
        Some(v) if !v.is_empty() && v.len() <= MAX_TOKEN_LEN => Ok(v),
        Some(v) if !v.is_empty() => Err(OAuthError::invalid_request(format!("{name} is too long"))),
        _ => Err(OAuthError::invalid_request(format!("{name} is missing"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_parameter_is_refused() {
        assert!(parameters(b"a=1&b=2").is_ok());
        let e = parameters(b"a=1&a=1").unwrap_err();
        assert_eq!(e.error_description, "parameter a is repeated");
    }

    #[test]
    fn required_parameters_are_present_and_bounded() {
        let p =
            parameters(format!("a=&b=x&c={}", "y".repeat(MAX_TOKEN_LEN + 1)).as_bytes()).unwrap();
        assert_eq!(required(&p, "b").unwrap(), "x");
        assert_eq!(
            required(&p, "a").unwrap_err().error_description,
            "a is missing"
        );
        assert_eq!(
            required(&p, "z").unwrap_err().error_description,
            "z is missing"
        );
        assert_eq!(
            required(&p, "c").unwrap_err().error_description,
            "c is too long"
        );
    }
}
