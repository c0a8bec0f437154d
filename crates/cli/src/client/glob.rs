//! `--include` patterns over a version's `/`-separated paths: `*` matches any run of
//! characters within one segment, `?` one character other than `/`, `**` any run of
//! characters across segments (and `**/` also no directory at all, so `**/*.xml`
//! matches `a.xml`). Every other character matches itself; a pattern matches the
//! whole path.

pub struct Glob(Vec<char>);

impl Glob {
    pub fn new(pattern: &str) -> Self {
        Glob(pattern.chars().collect())
    }

    pub fn matches(&self, path: &str) -> bool {
        let path: Vec<char> = path.chars().collect();
        matches_at(&self.0, &path)
    }
}

fn matches_at(p: &[char], s: &[char]) -> bool {
    match p {
        [] => s.is_empty(),
        ['*', '*', rest @ ..] => {
            if let ['/', after @ ..] = rest
                && matches_at(after, s)
            {
                return true;
            }
            (0..=s.len()).any(|i| matches_at(rest, &s[i..]))
        }
        ['*', rest @ ..] => {
            let segment = s.iter().position(|&c| c == '/').unwrap_or(s.len());
            (0..=segment).any(|i| matches_at(rest, &s[i..]))
        }
        ['?', rest @ ..] => matches!(s, [c, tail @ ..] if *c != '/' && matches_at(rest, tail)),
        [c, rest @ ..] => matches!(s, [d, tail @ ..] if d == c && matches_at(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_questions_and_double_stars() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.txt", "a.txt", true),
            ("*.txt", "dir/a.txt", false),
            ("dir/*", "dir/a.txt", true),
            ("dir/*", "dir/sub/a.txt", false),
            ("**", "any/thing/at/all", true),
            ("**/*.xml", "a.xml", true),
            ("**/*.xml", "x/y/a.xml", true),
            ("**/*.xml", "x/y/a.xmls", false),
            ("reports/**", "reports/a/b", true),
            ("reports/**", "report/a", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("f?.bin", "f1.bin", true),
            ("f?.bin", "f/.bin", false),
            ("f?.bin", "f12.bin", false),
            ("exact/path", "exact/path", true),
            ("exact/path", "exact/path2", false),
            ("données/*", "données/é.txt", true),
        ];
        for &(pattern, path, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(path),
                expected,
                "{pattern} ~ {path}"
            );
        }
    }
}
