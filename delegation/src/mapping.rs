//! From an upstream's identity to a CAS principal: renamed and filtered
//! attributes, and a principal id from a template. The default template,
//! `{upstream}:{id}`, puts every upstream's users in a namespace of their
//! own: an upstream's `casuser` never becomes the local `casuser`, nor
//! another upstream's.

use castellan_core::Principal;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// upstream attribute name → local name.
    pub rename: BTreeMap<String, String>,
    /// When set, only these (local) attributes are kept.
    pub keep: Option<Vec<String>>,
    /// `{id}` is the upstream's user id, `{upstream}` the upstream's name,
    /// `{ATTR}` the first value of a (local) attribute. Default
    /// [`DEFAULT_PRINCIPAL`].
    pub principal: Option<String>,
    /// The upstream's configured name (for `{upstream}`).
    pub upstream: String,
}

pub const DEFAULT_PRINCIPAL: &str = "{upstream}:{id}";

/// Where a principal template could produce the same id as a local account
/// or as another upstream's template.
#[derive(Debug, PartialEq, Eq)]
pub enum Collision {
    /// No literal text before the first placeholder: the upstream chooses
    /// the whole id, any local username included.
    NoNamespace,
    /// This local username starts with the template's literal prefix.
    LocalUser(String),
}

impl Mapping {
    pub fn template(&self) -> &str {
        self.principal.as_deref().unwrap_or(DEFAULT_PRINCIPAL)
    }

    /// The literal text before the first placeholder, `{upstream}` expanded:
    /// the namespace of the ids this mapping produces.
    pub fn namespace(&self) -> String {
        let expanded = self.template().replace("{upstream}", &self.upstream);
        expanded.split('{').next().unwrap_or_default().to_owned()
    }

    /// How ids from this template could collide with local usernames.
    pub fn collisions<'a>(&self, local_users: impl IntoIterator<Item = &'a str>) -> Vec<Collision> {
        let namespace = self.namespace();
        if namespace.is_empty() {
            return vec![Collision::NoNamespace];
        }
        local_users
            .into_iter()
            .filter(|u| u.starts_with(&namespace))
            .map(|u| Collision::LocalUser(u.to_owned()))
            .collect()
    }
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
        let template = self.template();
        let mut id = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            id.push_str(&rest[..open]);
            let close = rest[open..].find('}')? + open;
            let key = &rest[open + 1..close];
            let value = if key == "id" {
                upstream.id.clone()
            } else if key == "upstream" {
                self.upstream.clone()
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
            upstream: "campus".into(),
        };
        let out = m.apply(p.clone()).unwrap();
        assert_eq!(out.id, "partner:u@x.org");
        assert!(out.attributes.contains_key("groups") && !out.attributes.contains_key("secret"));
        let default = Mapping {
            upstream: "campus".into(),
            ..Default::default()
        };
        assert_eq!(default.apply(p.clone()).unwrap().id, "campus:u1");
        let missing = Mapping {
            principal: Some("{nope}".into()),
            ..Default::default()
        };
        assert!(missing.apply(p).is_none());
    }

    #[test]
    fn templates_without_a_namespace_are_collisions() {
        let m = |t: Option<&str>| Mapping {
            principal: t.map(str::to_owned),
            upstream: "campus".into(),
            ..Default::default()
        };
        assert_eq!(
            m(Some("{id}")).collisions(["casuser"]),
            vec![Collision::NoNamespace]
        );
        assert_eq!(
            m(Some("{mail}")).collisions([]),
            vec![Collision::NoNamespace]
        );
        assert_eq!(m(None).namespace(), "campus:");
        assert!(m(None).collisions(["casuser", "campusx"]).is_empty());
        assert_eq!(
            m(Some("campus:{id}")).collisions(["campus:root"]),
            vec![Collision::LocalUser("campus:root".into())]
        );
        assert_eq!(m(Some("{upstream}-{id}")).namespace(), "campus-");
        let id = m(Some("{upstream}/{id}"))
            .apply(Principal::new("x"))
            .unwrap()
            .id;
        assert_eq!(id, "campus/x");
    }
}
