//! Service URLs as CAS clients send them and get them back.

/// Appends `ticket` to a service URL (CAS 3.0 §2.2.4), before any fragment.
pub fn with_ticket(service: &str, ticket: &str) -> String {
    let (base, fragment) = match service.find('#') {
        Some(i) => service.split_at(i),
        None => (service, ""),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    // Sized once: `format!` grows its string as it goes.
    let mut url = String::with_capacity(service.len() + 8 + ticket.len());
    url.push_str(base);
    url.push(sep);
    url.push_str("ticket=");
    url.push_str(ticket);
    url.push_str(fragment);
    url
}

#[cfg(test)]
mod tests {
    use super::with_ticket;

    #[test]
    fn ticket_goes_before_the_fragment() {
        assert_eq!(with_ticket("https://a/", "ST-1"), "https://a/?ticket=ST-1");
        assert_eq!(
            with_ticket("https://a/?x=1", "ST-1"),
            "https://a/?x=1&ticket=ST-1"
        );
        assert_eq!(
            with_ticket("https://a/p#frag", "ST-1"),
            "https://a/p?ticket=ST-1#frag"
        );
        assert_eq!(
            with_ticket("https://a/p?q#f?g", "ST-1"),
            "https://a/p?q&ticket=ST-1#f?g"
        );
    }
}
