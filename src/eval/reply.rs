//! The result an external evaluator prints: `{"scores": {...}, "stderr": {...}}`, or
//! `{"error": "..."}`, as the last JSON-object line of its output (anything before it is logs).
//! Python's `json.dumps` writes `NaN` and `Infinity`; they are read (as non-finite values) so
//! that the failure names the objective instead of calling the whole output garbage.

use std::collections::BTreeMap;

use serde_json::Value;

use super::evaluator::{Objective, Score};

/// Finds the reply in a program's stdout: the last line that is a JSON object.
pub fn find_reply(stdout: &str) -> Option<serde_json::Map<String, Value>> {
    stdout.lines().rev().find_map(parse_object_line)
}

/// Parses one line as a JSON object (with Python's non-finite literals), if it is one.
pub fn parse_object_line(line: &str) -> Option<serde_json::Map<String, Value>> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    match serde_json::from_str(&python_literals_to_null(line)) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// Checks a reply against the declared objectives and returns every score it holds.
///
/// Errors name the problem: the program's own `error`, a missing `scores` object, a declared
/// objective that is absent, or one that is not a finite number.
pub fn read_scores(
    reply: &serde_json::Map<String, Value>,
    objectives: &[Objective],
) -> Result<BTreeMap<String, Score>, String> {
    if let Some(error) = reply.get("error") {
        let text = error
            .as_str()
            .map_or_else(|| error.to_string(), String::from);
        return Err(format!("the evaluator reported an error: {text}"));
    }
    let Some(Value::Object(scores)) = reply.get("scores") else {
        return Err(format!(
            "the reply has no \"scores\" object: {}",
            clip(&Value::Object(reply.clone()).to_string(), 300)
        ));
    };
    let stderr = match reply.get("stderr") {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    for objective in objectives {
        match scores.get(&objective.name) {
            None => {
                let found: Vec<&String> = scores.keys().collect();
                return Err(format!(
                    "objective {:?} is missing from the scores (found {found:?})",
                    objective.name
                ));
            }
            Some(value) if !value.as_f64().is_some_and(f64::is_finite) => {
                return Err(format!(
                    "objective {:?} is not a finite number: {}",
                    objective.name,
                    if value.is_null() {
                        "NaN, Infinity or null".to_string()
                    } else {
                        value.to_string()
                    }
                ));
            }
            Some(_) => {}
        }
    }
    Ok(scores
        .iter()
        .filter_map(|(name, value)| {
            let value = value.as_f64().filter(|v| v.is_finite())?;
            let stderr = stderr
                .and_then(|s| s.get(name))
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite() && *v >= 0.0);
            Some((name.clone(), Score { value, stderr }))
        })
        .collect())
}

/// The first `max` characters of `text`, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Replaces the bare literals `NaN`, `Infinity` and `-Infinity` outside strings with `null`.
fn python_literals_to_null(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = json;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_string = true;
        } else if let Some(literal) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|l| rest.starts_with(l))
        {
            out.push_str("null");
            rest = &rest[literal.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::evaluator::Direction;

    fn objectives(names: &[&str]) -> Vec<Objective> {
        names
            .iter()
            .map(|n| Objective::new(*n, Direction::Maximize))
            .collect()
    }

    #[test]
    fn the_last_json_line_is_the_reply_and_logs_before_it_are_ignored() {
        let out = "loading...\n{\"not\": \"this\"}\nprogress 50%\n{\"scores\": {\"acc\": 0.5}, \"stderr\": {\"acc\": 0.1}}\n\n";
        let reply = find_reply(out).unwrap();
        let scores = read_scores(&reply, &objectives(&["acc"])).unwrap();
        assert_eq!(scores["acc"].value, 0.5);
        assert_eq!(scores["acc"].stderr, Some(0.1));
    }

    #[test]
    fn python_non_finite_literals_become_a_named_failure() {
        let reply = find_reply("{\"scores\": {\"acc\": NaN, \"note\": \"NaN stays\"}}").unwrap();
        assert_eq!(reply["scores"]["note"], "NaN stays");
        let error = read_scores(&reply, &objectives(&["acc"])).unwrap_err();
        assert!(error.contains("\"acc\" is not a finite number"), "{error}");
        let reply = find_reply("{\"scores\": {\"acc\": -Infinity}}").unwrap();
        assert!(read_scores(&reply, &objectives(&["acc"])).is_err());
    }

    #[test]
    fn missing_objectives_errors_and_garbage_are_reported() {
        let reply = find_reply("{\"scores\": {\"loss\": 1}}").unwrap();
        let error = read_scores(&reply, &objectives(&["acc"])).unwrap_err();
        assert!(error.contains("\"acc\" is missing"), "{error}");
        let reply = find_reply("{\"error\": \"out of memory\"}").unwrap();
        let error = read_scores(&reply, &objectives(&["acc"])).unwrap_err();
        assert!(error.contains("out of memory"), "{error}");
        assert!(find_reply("Traceback (most recent call last):\n{oops").is_none());
    }
}
