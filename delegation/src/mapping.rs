//! From an upstream's identity to a CAS principal: renamed and filtered
//! attributes, and a principal id from a template, so that two upstreams
//! cannot produce the same user by accident.

use castellan_core::Principal;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// upstream attribute name → local name.
    pub rename: BTreeMap<String, String>,
    /// When set, only these (local) attributes are kept.
    pub keep: Option<Vec<String>>,
    /// `{id}` is the upstream's user id, `{ATTR}` the first value of a
    /// (local) attribute. Default `{id}`.
    pub principal: Option<String>,
}

impl Mapping {
    /// `None` when the template names an attribute the upstream did not send.
    pub fn apply(&self, upstream: Principal) -> Option<Principal> {
        let mut attributes = BTreeMap::new();
        for (name, values) in upstream.attributes {
            let local = self.rename.get(&name).cloned().unwrap_or(name);
            if self.keep.as_ref().is_none_or(|k| k.contains(&local)) {
                attributes.insert(local, values);
            }
        }
        let template = self.principal.as_deref().unwrap_or("{id}");
        let mut id = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            id.push_str(&rest[..open]);
            let close = rest[open..].find('}')? + open;
            let key = &rest[open + 1..close];
            let value = if key == "id" {
                upstream.id.clone()
            } else {
                attributes.get(key)?.first()?.clone()
            };
            id.push_str(&value);
            rest = &rest[close + 1..];
        }
        id.push_str(rest);
        if id.is_empty() {
            return None;
        }
        Some(Principal { id, attributes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_keep_and_template() {
        let p = Principal::new("u1")
            .with_attribute("email", &["u@x.org"])
            .with_attribute("groups", &["a", "b"])
            .with_attribute("secret", &["s"]);
        let m = Mapping {
            rename: [("email".to_owned(), "mail".to_owned())]
                .into_iter()
                .collect(),
            keep: Some(vec!["mail".into(), "groups".into()]),
            principal: Some("partner:{mail}".into()),
        };
        let out = m.apply(p.clone()).unwrap();
        assert_eq!(out.id, "partner:u@x.org");
        assert!(out.attributes.contains_key("groups") && !out.attributes.contains_key("secret"));
        assert_eq!(Mapping::default().apply(p.clone()).unwrap().id, "u1");
        let missing = Mapping {
            principal: Some("{nope}".into()),
            ..Default::default()
        };
        assert!(missing.apply(p).is_none());
    }
}
