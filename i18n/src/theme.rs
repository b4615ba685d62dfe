//! A service's look on the login page: its display name, logo and accent
//! colour, from a `[themes.NAME]` table or the service's own keys.

use std::path::Path;
use std::sync::Arc;

/// Logos larger than this are refused: they are held in memory and sent
/// with every login page.
pub const MAX_LOGO_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThemeError {
    #[error("accent_color: {0:?} is not a colour like \"#1a5fb4\" or \"#15b\"")]
    AccentColor(String),
    #[error("logo: {path}: the file must end in .png, .svg, .jpg or .jpeg")]
    LogoType { path: String },
    #[error("logo: {path}: {reason}")]
    LogoUnreadable { path: String, reason: String },
    #[error("logo: {path}: larger than {MAX_LOGO_BYTES} bytes")]
    LogoTooLarge { path: String },
    #[error("logo: {path}: the content is not a {kind} image")]
    LogoContent { path: String, kind: &'static str },
    #[error("display_name: must be 1 to 100 characters")]
    DisplayName,
}

impl ThemeError {
    /// The key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            ThemeError::AccentColor(_) => "accent_color",
            ThemeError::DisplayName => "display_name",
            _ => "logo",
        }
    }
}

/// A logo read at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logo {
    pub content_type: &'static str,
    pub bytes: Arc<[u8]>,
}

/// The keys as written, paths already resolved against the configuration
/// file's directory.
#[derive(Debug, Clone, Default)]
pub struct ThemeInput {
    pub display_name: Option<String>,
    pub logo: Option<std::path::PathBuf>,
    pub accent_color: Option<String>,
}

/// A checked theme; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Theme {
    pub display_name: Option<String>,
    pub logo: Option<Logo>,
    /// `#rrggbb`, lower case.
    pub accent_color: Option<String>,
}

impl Theme {
    /// Checks every key, reporting each problem.
    pub fn load(input: &ThemeInput) -> Result<Theme, Vec<ThemeError>> {
        let mut errors = Vec::new();
        let display_name = input.display_name.as_deref().and_then(|n| {
            let n = n.trim();
            if n.is_empty() || n.chars().count() > 100 {
                errors.push(ThemeError::DisplayName);
                None
            } else {
                Some(n.to_owned())
            }
        });
        let logo = input.logo.as_deref().and_then(|p| match load_logo(p) {
            Ok(l) => Some(l),
            Err(e) => {
                errors.push(e);
                None
            }
        });
        let accent_color = input
            .accent_color
            .as_deref()
            .and_then(|c| match accent_color(c) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            });
        if errors.is_empty() {
            Ok(Theme {
                display_name,
                logo,
                accent_color,
            })
        } else {
            Err(errors)
        }
    }

    /// `self`'s keys, and `base`'s where `self` has none (a service's own
    /// keys over its named theme).
    pub fn over(self, base: &Theme) -> Theme {
        Theme {
            display_name: self.display_name.or_else(|| base.display_name.clone()),
            logo: self.logo.or_else(|| base.logo.clone()),
            accent_color: self.accent_color.or_else(|| base.accent_color.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Theme::default()
    }

    /// The stylesheet that applies the accent colour (served, never
    /// inline: the CSP allows styles from the origin only).
    pub fn stylesheet(&self) -> String {
        match &self.accent_color {
            Some(c) => format!(
                ":root {{ --accent: {c}; --accent-hover: {c}; }}\n\
                 .service-banner {{ border-color: {c}; }}\n"
            ),
            None => String::new(),
        }
    }
}

/// `#rgb` or `#rrggbb`, as `#rrggbb` in lower case; nothing else reaches
/// the stylesheet.
pub fn accent_color(value: &str) -> Result<String, ThemeError> {
    let bad = || ThemeError::AccentColor(value.to_owned());
    let hex = value.strip_prefix('#').ok_or_else(bad)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let hex = hex.to_ascii_lowercase();
    match hex.len() {
        6 => Ok(format!("#{hex}")),
        3 => Ok(hex.chars().fold(String::from("#"), |mut s, c| {
            s.push(c);
            s.push(c);
            s
        })),
        _ => Err(bad()),
    }
}

/// Reads a logo: its type by extension, confirmed by its first bytes.
pub fn load_logo(path: &Path) -> Result<Logo, ThemeError> {
    let shown = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (content_type, kind) = match ext.as_deref() {
        Some("png") => ("image/png", "PNG"),
        Some("svg") => ("image/svg+xml", "SVG"),
        Some("jpg" | "jpeg") => ("image/jpeg", "JPEG"),
        _ => return Err(ThemeError::LogoType { path: shown }),
    };
    let meta = std::fs::metadata(path).map_err(|e| ThemeError::LogoUnreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if meta.len() > MAX_LOGO_BYTES as u64 {
        return Err(ThemeError::LogoTooLarge { path: shown });
    }
    let bytes = std::fs::read(path).map_err(|e| ThemeError::LogoUnreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if bytes.len() > MAX_LOGO_BYTES {
        return Err(ThemeError::LogoTooLarge { path: shown });
    }
    let looks_right = match kind {
        "PNG" => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "JPEG" => bytes.starts_with(&[0xff, 0xd8, 0xff]),
        _ => {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
            head.contains("<svg")
        }
    };
    if !looks_right {
        return Err(ThemeError::LogoContent { path: shown, kind });
    }
    Ok(Logo {
        content_type,
        bytes: bytes.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accent_colours_are_hex_only() {
        assert_eq!(accent_color("#1A5FB4").unwrap(), "#1a5fb4");
        assert_eq!(accent_color("#15b").unwrap(), "#1155bb");
        for bad in [
            "red",
            "#12",
            "#1234",
            "1a5fb4",
            "#1a5fb4;}",
            "#gggggg",
            "",
            "#",
        ] {
            assert!(accent_color(bad).is_err(), "{bad}");
        }
    }

    fn temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("castellan-theme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn logos_are_checked_by_extension_content_and_size() {
        let png = temp("a.png", b"\x89PNG\r\n\x1a\nrest");
        assert_eq!(load_logo(&png).unwrap().content_type, "image/png");
        let svg = temp(
            "a.svg",
            b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>",
        );
        assert_eq!(load_logo(&svg).unwrap().content_type, "image/svg+xml");
        let fake = temp("b.png", b"<svg/>");
        assert!(matches!(
            load_logo(&fake),
            Err(ThemeError::LogoContent { .. })
        ));
        let gif = temp("c.gif", b"GIF89a");
        assert!(matches!(load_logo(&gif), Err(ThemeError::LogoType { .. })));
        let big = temp("d.jpg", &vec![0xff; MAX_LOGO_BYTES + 1]);
        assert!(matches!(
            load_logo(&big),
            Err(ThemeError::LogoTooLarge { .. })
        ));
        assert!(matches!(
            load_logo(Path::new("/nonexistent/x.png")),
            Err(ThemeError::LogoUnreadable { .. })
        ));
    }

    #[test]
    fn a_services_own_keys_override_its_theme() {
        let base = Theme {
            display_name: Some("Campus".into()),
            logo: None,
            accent_color: Some("#000000".into()),
        };
        let own = Theme {
            display_name: None,
            logo: None,
            accent_color: Some("#ffffff".into()),
        };
        let t = own.over(&base);
        assert_eq!(t.display_name.as_deref(), Some("Campus"));
        assert_eq!(t.accent_color.as_deref(), Some("#ffffff"));
        assert!(t.stylesheet().contains("#ffffff"));
    }

    #[test]
    fn every_problem_is_reported() {
        let input = ThemeInput {
            display_name: Some("  ".into()),
            logo: Some("x.bmp".into()),
            accent_color: Some("blue".into()),
        };
        let errors = Theme::load(&input).unwrap_err();
        let keys: Vec<_> = errors.iter().map(ThemeError::key).collect();
        assert_eq!(keys, ["display_name", "logo", "accent_color"]);
    }
}
