//! "Did you mean": the known name closest to a misspelled one, for the
//! errors about unknown fields in job files and the configuration.

/// Words people reach for that mean a field of another name.
const SYNONYMS: &[(&str, &str)] = &[
    ("user", "login"),
    ("username", "login"),
    ("user_name", "login"),
    ("pass", "password"),
    ("passwd", "password"),
    ("pwd", "password"),
    ("hostname", "host"),
    ("address", "host"),
    ("remote_path", "server_path"),
    ("remote_dir", "server_path"),
    ("path", "server_path"),
    ("dest", "server_path"),
    ("local", "local_path"),
    ("source", "local_path"),
    ("file_path", "local_path"),
    ("filename", "remote_name"),
];

/// The one of `known` that `word` most likely meant, if any is close: a
/// synonym, the same name in another case or with `-` for `_`, or one a
/// couple of typos away.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let norm = word.to_ascii_lowercase().replace('-', "_");
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(&norm)) {
        return Some(k);
    }
    if let Some((_, to)) = SYNONYMS.iter().find(|(from, _)| *from == norm) {
        if let Some(k) = known.iter().find(|k| *k == to) {
            return Some(k);
        }
    }
    let limit = (norm.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (distance(&norm, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance: insertions, deletions, substitutions and swaps of two
/// neighbours (`prot` is one typo from `port`).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_synonyms_and_nothing_close() {
        let known = ["host", "port", "login", "password", "tls"];
        assert_eq!(closest("pasword", &known), Some("password"));
        assert_eq!(closest("user", &known), Some("login"));
        assert_eq!(closest("Login", &known), Some("login"));
        assert_eq!(closest("prot", &known), Some("port"));
        assert_eq!(closest("colour", &known), None);
        let file = ["local_path", "server_path", "remote_name"];
        assert_eq!(closest("local-path", &file), Some("local_path"));
        assert_eq!(closest("remote_path", &file), Some("server_path"));
        assert_eq!(closest("servr_path", &file), Some("server_path"));
    }
}
