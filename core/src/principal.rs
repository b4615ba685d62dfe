//! The authenticated subject and its multi-valued attributes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Attribute name to values; ordered so that responses are deterministic.
pub type Attributes = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub id: String,
    #[serde(default)]
    pub attributes: Attributes,
}

impl Principal {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            attributes: Attributes::new(),
        }
    }

    pub fn with_attribute(mut self, name: &str, values: &[&str]) -> Self {
        self.attributes.insert(
            name.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        );
        self
    }

    /// The attributes named in `release`, in release order, skipping absent ones.
    pub fn released(&self, release: &[String]) -> Attributes {
        release
            .iter()
            .filter_map(|name| {
                self.attributes
                    .get(name)
                    .map(|values| (name.clone(), values.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_keeps_only_listed_attributes() {
        let p = Principal::new("u")
            .with_attribute("mail", &["u@example.org"])
            .with_attribute("secret", &["x"]);
        let released = p.released(&["mail".into(), "absent".into()]);
        assert_eq!(released.len(), 1);
        assert_eq!(released["mail"], vec!["u@example.org".to_owned()]);
    }
}
