//! `monotable serve --config FILE`: every `serve` option from a TOML file,
//! and `serve --print-config`: the settings in effect and where each came
//! from.
//!
//! The file is a flat table whose keys are the options' long names
//! (`resp-listen`; `resp_listen` too) and whose values are strings,
//! integers, floats or booleans (a switch such as `recover-catalog` is
//! on with `true`). Precedence, highest first: a flag on the command
//! line, the option's environment variable, the file, the default. The
//! file's settings become flags before clap parses the command line, so
//! each is checked exactly as the flag would be; a key that names no
//! option is an error, as is a value of another type (an array, a table).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

/// Options that choose the file or print the settings: not settable in
/// the file, not printed.
const NOT_IN_FILE: [&str; 4] = ["config", "print-config", "help", "version"];

/// Options that give one setting two ways: a file's key for one is not
/// used when a flag or the environment gives the other (the password
/// from a flag beats a password file named in the config file).
const ONE_SETTING: [[&str; 2]; 1] = [["requirepass", "requirepass-file"]];

/// Where the settings a file gave came from.
pub struct FromFile {
    pub path: PathBuf,
    /// Long names of the options the file set (not overridden).
    pub keys: BTreeSet<String>,
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// The long names a command line spelled out (`--name` or `--name=v`),
/// by each option's own long name (aliases resolved).
fn given(serve: &Command, args: &[OsString]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in args {
        let Some(flag) = a.to_str().and_then(|a| a.strip_prefix("--")) else { continue };
        let name = flag.split('=').next().unwrap_or(flag);
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let aliases = arg.get_all_aliases().unwrap_or_default();
            if long == name || aliases.contains(&name) {
                out.insert(long.to_owned());
            }
        }
    }
    out
}

/// Bytes a config file may hold.
pub const CONFIG_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// The file's text, refused past [`CONFIG_FILE_MAX_BYTES`] (`/dev/zero`
/// would fill memory).
fn read_limited(path: &std::path::Path) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(CONFIG_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    if bytes.len() as u64 > CONFIG_FILE_MAX_BYTES {
        bail!("the config file {} holds more than {CONFIG_FILE_MAX_BYTES} bytes", path.display());
    }
    String::from_utf8(bytes)
        .map_err(|_| anyhow!("the config file {} is not UTF-8 text", path.display()))
}

/// The value of `--config` on the `serve` command line, or of
/// `MONOTABLE_CONFIG` (unless empty).
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--config") => return it.next().map(PathBuf::from),
            Some(s) if s.starts_with("--config=") => return Some(PathBuf::from(&s[9..])),
            _ => {}
        }
    }
    std::env::var_os("MONOTABLE_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `args` (the whole command line) with the settings of `serve
/// --config FILE` added as flags, where neither a flag nor the option's
/// environment variable sets them. Other commands pass unchanged.
/// Errors: the file cannot be read or is not TOML; a key names no `serve`
/// option; a value is not a string, number or boolean.
pub fn expand(cli: &Command, args: Vec<OsString>) -> Result<(Vec<OsString>, Option<FromFile>)> {
    if args.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok((args, None));
    }
    let serve = cli.find_subcommand("serve").expect("the serve command");
    let Some(path) = config_path(&args[2..]) else { return Ok((args, None)) };
    let text = read_limited(&path)?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        // Not the error's own text: it quotes the line, which may hold a
        // password.
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        });
        anyhow!("the config file {} is not TOML{at}: {}", path.display(), e.message().trim())
    })?;
    let on_command_line = given(serve, &args[2..]);
    let mut extra = Vec::new();
    let mut keys = BTreeSet::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(name.as_str())
                    || a.get_all_aliases().is_some_and(|al| al.contains(&name.as_str()))
            })
            .filter(|_| !NOT_IN_FILE.contains(&name.as_str()))
            .ok_or_else(|| {
                anyhow!(
                    "the config file {}: {key:?} is not an option of `monotable serve` (see \
                     `monotable serve --help`)",
                    path.display()
                )
            })?;
        let name = arg.get_long().unwrap_or(&name).to_owned();
        let set_above = |name: &str| {
            let arg = serve.get_arguments().find(|a| a.get_long() == Some(name));
            let from_env =
                arg.and_then(Arg::get_env).is_some_and(|v| std::env::var_os(v).is_some());
            on_command_line.contains(name) || from_env
        };
        let same: Vec<&str> = ONE_SETTING
            .iter()
            .filter(|pair| pair.contains(&name.as_str()))
            .flat_map(|pair| pair.iter().copied())
            .collect();
        if set_above(&name) || same.iter().any(|n| set_above(n)) {
            continue;
        }
        let flag = format!("--{name}");
        match (&value, takes_value(arg)) {
            (toml::Value::Boolean(on), false) => {
                if *on {
                    extra.push(OsString::from(flag));
                }
            }
            (toml::Value::String(s), true) => extra.push(OsString::from(format!("{flag}={s}"))),
            (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_), true) => {
                extra.push(OsString::from(format!("{flag}={value}")))
            }
            _ => bail!(
                "the config file {}: {key:?} takes {}, not {}",
                path.display(),
                if takes_value(arg) { "a string or a number" } else { "true or false" },
                value.type_str()
            ),
        }
        keys.insert(name);
    }
    let mut out = args;
    out.splice(2..2, extra);
    Ok((out, Some(FromFile { path, keys })))
}

/// The settings `serve` runs with, as a TOML file `--config` would read,
/// each with where it came from; secrets (options whose environment
/// values are hidden, the password) are not shown.
pub fn print(serve: &Command, matches: &ArgMatches, file: Option<&FromFile>) -> String {
    let mut out =
        String::from("# monotable serve: the settings in effect, and where each came from\n");
    if let Some(f) = file {
        out.push_str(&format!("# config file: {}\n", f.path.display()));
    }
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if file.is_some_and(|f| f.keys.contains(long)) => {
                "config file".to_owned()
            }
            Some(ValueSource::CommandLine) => "command line".to_owned(),
            Some(ValueSource::EnvVariable) => format!(
                "environment ({})",
                arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) => "default".to_owned(),
            _ => {
                out.push_str(&format!("# {long}: not set\n"));
                continue;
            }
        };
        if arg.is_hide_env_values_set() {
            let empty = matches.get_raw(id).is_some_and(|mut v| v.all(|s| s.is_empty()));
            let shown = if empty { "empty (none)" } else { "set (hidden)" };
            out.push_str(&format!("# {long}: {shown}  # {source}\n"));
            continue;
        }
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let raw = raw.join(",");
        let value = if !takes_value(arg) || raw.parse::<i64>().is_ok() {
            raw
        } else {
            toml::Value::String(raw).to_string()
        };
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}
