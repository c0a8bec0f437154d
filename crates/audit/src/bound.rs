//! The bounds that keep a line small whatever a client sent.

/// Longest value of a field that can carry what a client sent (claims of a refused
/// token, a name asked for, a client address).
pub const FIELD_MAX: usize = 128;
/// Longest free-text field (a revocation's target and reason, an upstream's message,
/// a path).
pub const DETAIL_MAX: usize = 1024;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes cut]", &s[..cut], s.len() - cut)
}
