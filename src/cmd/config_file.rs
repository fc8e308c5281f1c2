//! `--config FILE`: a TOML file that sets a command's flags, keyed by their long names.
//!
//! The file's values become the flags' defaults and the command line is parsed again, so
//! clap's own order gives the precedence: a flag, then its `NKPKI_*` variable, then the
//! file, then the built-in default. Every value goes through the flag's own parser (ranges,
//! enums), and a new flag is settable in the file without a line here.

use anyhow::Context;
use std::any::TypeId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Spanned, Value};

/// Flags a config file cannot set: clap's own and the one that names the file.
const NOT_SETTABLE: [&str; 3] = ["help", "version", "config"];

/// The file's values, checked against a command's flags, as `(flag id, values)`.
#[derive(Debug)]
pub struct FileDefaults(Vec<(clap::Id, Vec<String>)>);

impl FileDefaults {
    /// Makes the file's values the defaults of `cmd`'s flags.
    pub fn apply(self, mut cmd: clap::Command) -> clap::Command {
        for (id, values) in self.0 {
            cmd = cmd.mut_arg(id, |arg| arg.default_values(values));
        }
        cmd
    }
}

/// Reads `path` and checks each key against `cmd`'s long flags and each value with the
/// flag's parser; an error names the file, the line and the key.
pub fn load(cmd: &clap::Command, path: &Path) -> anyhow::Result<FileDefaults> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut cmd = cmd.clone();
    cmd.build();
    let settable: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_SETTABLE.contains(&a.get_id().as_str()))
        .collect();
    let mut defaults = Vec::new();
    for (key, value) in &table {
        let at = format!(
            "config file {} line {}",
            path.display(),
            line_of(&text, key.span().start)
        );
        let Some(arg) = settable
            .iter()
            .find(|a| a.get_long() == Some(key.get_ref()))
        else {
            let known: Vec<&str> = settable.iter().filter_map(|a| a.get_long()).collect();
            return Err(super::hinted(
                format!("{at}: unknown key `{}`", key.get_ref()),
                format!(
                    "the keys are the long flags of `nkpki {}` without their dashes: {}",
                    cmd.get_name(),
                    known.join(", ")
                ),
            ));
        };
        let values = strings(arg, value.get_ref())
            .map_err(|expected| format!("must be {expected}, not {}", value.get_ref().type_str()))
            .and_then(|values| check(arg, values))
            .map_err(|why| {
                anyhow::anyhow!(
                    "config file {} line {}: key `{}`: {why}",
                    path.display(),
                    line_of(&text, value.span().start),
                    key.get_ref()
                )
            })?;
        defaults.push((arg.get_id().clone(), values));
    }
    Ok(FileDefaults(defaults))
}

/// The TOML value as the strings the flag would take on the command line, or what the
/// flag expects if the value has the wrong type.
fn strings(arg: &clap::Arg, value: &Value) -> Result<Vec<String>, String> {
    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
        || matches!(arg.get_action(), clap::ArgAction::Append);
    match value {
        Value::Array(items) if many => items
            .iter()
            .map(|item| scalar(arg, item))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|expected| format!("an array of {expected}")),
        _ => scalar(arg, value).map(|s| vec![s]),
    }
}

fn scalar(arg: &clap::Arg, value: &Value) -> Result<String, String> {
    let parses = arg.get_value_parser().type_id();
    let integer = [
        TypeId::of::<i64>(),
        TypeId::of::<u64>(),
        TypeId::of::<i32>(),
        TypeId::of::<u32>(),
        TypeId::of::<u16>(),
        TypeId::of::<u8>(),
        TypeId::of::<usize>(),
    ]
    .into_iter()
    .any(|t| parses == t);
    match value {
        Value::Integer(n) if integer => Ok(n.to_string()),
        Value::Boolean(b) if parses == TypeId::of::<bool>() => Ok(b.to_string()),
        Value::String(s) if !integer && parses != TypeId::of::<bool>() => Ok(s.clone()),
        _ if integer => Err("an integer".into()),
        _ if parses == TypeId::of::<bool>() => Err("true or false".into()),
        _ if parses == TypeId::of::<PathBuf>() => Err("a path (a string)".into()),
        _ => Err("a string".into()),
    }
}

/// Runs each value through the flag's own parser (ranges, enums, formats), alone, so an
/// error can name the file's key rather than the flag.
fn check(arg: &clap::Arg, values: Vec<String>) -> Result<Vec<String>, String> {
    if values.is_empty() {
        return Err("an empty array sets nothing: leave the key out".into());
    }
    let long = arg.get_long().unwrap_or_default();
    let mut alone = clap::Arg::new("value")
        .long(long.to_owned())
        .value_parser(arg.get_value_parser().clone())
        .action(clap::ArgAction::Append);
    if let Some(names) = arg.get_value_names() {
        alone = alone.value_names(names.iter().cloned());
    }
    let alone = clap::Command::new("check").no_binary_name(true).arg(alone);
    let argv = values.iter().map(|v| format!("--{long}={v}"));
    alone
        .try_get_matches_from(argv)
        .map_err(|e| first_line(&e))?;
    Ok(values)
}

/// clap's message without its `error:` prefix and usage lines.
fn first_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    #[derive(Debug, clap::Parser)]
    #[command(name = "demo")]
    struct Demo {
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: String,
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(10..=86_400))]
        session_ttl: i64,
        #[arg(long)]
        tls_cert: Option<PathBuf>,
        #[arg(long)]
        verbose: bool,
        #[arg(long)]
        peer: Vec<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    }

    fn parse(file: &str, argv: &[&str]) -> anyhow::Result<Demo> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, file)?;
        let cmd = Demo::command();
        let defaults = load(&cmd, &path)?;
        let matches = defaults
            .apply(cmd)
            .try_get_matches_from(std::iter::once("demo").chain(argv.iter().copied()))?;
        Ok(Demo::from_arg_matches(&matches)?)
    }

    fn message(err: anyhow::Error) -> String {
        format!("{err:#}")
    }

    #[test]
    fn the_file_sets_every_kind_of_flag() {
        let demo = parse(
            "listen = \"0.0.0.0:9\"\nsession-ttl = 60\ntls-cert = \"/etc/c.pem\"\n\
             verbose = true\npeer = [\"a\", \"b\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(demo.listen, "0.0.0.0:9");
        assert_eq!(demo.session_ttl, 60);
        assert_eq!(demo.tls_cert, Some(PathBuf::from("/etc/c.pem")));
        assert!(demo.verbose);
        assert_eq!(demo.peer, ["a", "b"]);
    }

    #[test]
    fn a_flag_beats_the_file_and_defaults_fill_the_rest() {
        let demo = parse("session-ttl = 60\n", &["--session-ttl", "90"]).unwrap();
        assert_eq!(demo.session_ttl, 90);
        assert_eq!(demo.listen, "127.0.0.1:1");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = message(parse("listen = \"a:1\"\n\nlisten-adress = \"x\"\n", &[]).unwrap_err());
        assert!(err.contains("line 3: unknown key `listen-adress`"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let err = message(parse("\nsession-ttl = \"300\"\n", &[]).unwrap_err());
        assert!(
            err.contains("line 2: key `session-ttl`: must be an integer, not string"),
            "{err}"
        );
        let err = message(parse("verbose = 1\n", &[]).unwrap_err());
        assert!(err.contains("`verbose`: must be true or false"), "{err}");
        let err = message(parse("tls-cert = 5\n", &[]).unwrap_err());
        assert!(err.contains("`tls-cert`: must be a path"), "{err}");
    }

    #[test]
    fn a_value_out_of_range_is_refused_by_the_flags_parser() {
        let err = message(parse("session-ttl = 5\n", &[]).unwrap_err());
        assert!(err.contains("key `session-ttl`"), "{err}");
        assert!(err.contains("10..=86400"), "{err}");
    }

    #[test]
    fn the_config_key_itself_and_tables_are_refused() {
        let err = message(parse("config = \"/x\"\n", &[]).unwrap_err());
        assert!(err.contains("unknown key `config`"), "{err}");
        let err = message(parse("[listen]\nx = 1\n", &[]).unwrap_err());
        assert!(
            err.contains("key `listen`: must be a string, not table"),
            "{err}"
        );
    }

    #[test]
    fn broken_toml_names_the_file() {
        let err = message(parse("listen = \n", &[]).unwrap_err());
        assert!(err.contains("demo.toml is not valid TOML"), "{err}");
    }
}
