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

    /// Dynamic programming over (pattern position, path position), filled from the
    /// ends: `at[p][s]` says whether the pattern from `p` matches the path from `s`.
    /// Each cell looks at a fixed number of others, so a match costs
    /// O(|pattern| * |path|) however many stars the pattern has.
    pub fn matches(&self, path: &str) -> bool {
        let (p, s) = (&self.0, path.chars().collect::<Vec<char>>());
        let width = s.len() + 1;
        let mut at = vec![false; (p.len() + 1) * width];
        at[p.len() * width + s.len()] = true;
        for pi in (0..p.len()).rev() {
            for si in (0..=s.len()).rev() {
                let here = s.get(si).copied();
                let next = |dp: usize| at[dp * width + si];
                let advanced = |dp: usize| si < s.len() && at[dp * width + si + 1];
                at[pi * width + si] = match (p[pi], p.get(pi + 1)) {
                    // `**`: skip a following `/` (no directory at all), match nothing
                    // more, or take one more character of any kind.
                    ('*', Some('*')) => {
                        (p.get(pi + 2) == Some(&'/') && next(pi + 3))
                            || next(pi + 2)
                            || (si < s.len() && at[pi * width + si + 1])
                    }
                    ('*', _) => {
                        next(pi + 1) || (here.is_some_and(|c| c != '/') && at[pi * width + si + 1])
                    }
                    ('?', _) => here.is_some_and(|c| c != '/') && advanced(pi + 1),
                    (c, _) => here == Some(c) && advanced(pi + 1),
                };
            }
        }
        at[0]
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
            ("***.txt", "a/b.txt", true),
            ("a*", "a", true),
            ("", "", true),
            ("", "a", false),
        ];
        for &(pattern, path, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(path),
                expected,
                "{pattern} ~ {path}"
            );
        }
    }

    #[test]
    fn patterns_that_backtracking_would_take_exponential_time_over() {
        let long = format!("{}/y", "d/".repeat(200));
        assert!(!Glob::new("**/**/**/**/**/**/x").matches(&long));
        assert!(Glob::new("**/**/**/**/**/**/y").matches(&long));
        let many_a = "a".repeat(100);
        assert!(!Glob::new("*a*a*a*a*a*a*a*a*b").matches(&many_a));
        assert!(Glob::new("*a*a*a*a*a*a*a*a*a").matches(&many_a));
    }
}
