//! `${NAME}` expansion in every string of a configuration, before it is typed, so
//! that secrets and per-environment values can live outside the file.

use super::Problems;

/// Expands every string in `table`, recording a problem for each missing variable.
pub(crate) fn expand_table(
    table: &mut toml::Table,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) {
    for (key, value) in table.iter_mut() {
        let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        expand_value(value, &path, env, problems);
    }
}

fn expand_value(value: &mut toml::Value, path: &str, env: &dyn Fn(&str) -> Option<String>, problems: &mut Problems) {
    match value {
        toml::Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.add(path, message),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(table) => expand_table(table, path, env, problems),
        _ => {}
    }
}

/// Replaces `${NAME}` with the variable's value; `$${` writes a literal `${`.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| format!("`${{` without a closing `}}` in `{s}`"))?;
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`${{{name}}}` is not a valid environment variable reference"));
            }
            let value = env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some(String::from("ada")),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references_and_keeps_everything_else() {
        assert_eq!(expand("amqp://${USER}:pw@h/", &env).as_deref(), Ok("amqp://ada:pw@h/"));
        assert_eq!(expand("${USER}${EMPTY}${USER}", &env).as_deref(), Ok("adaada"));
        assert_eq!(expand("cost $5, $${USER}", &env).as_deref(), Ok("cost $5, ${USER}"));
        assert_eq!(expand("no refs", &env).as_deref(), Ok("no refs"));
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(expand("${MISSING}", &env), Err(String::from("environment variable `MISSING` is not set")));
        assert_eq!(expand("${USER", &env), Err(String::from("`${` without a closing `}` in `${USER`")));
        assert_eq!(expand("${A-B}", &env), Err(String::from("`${A-B}` is not a valid environment variable reference")));
    }
}
