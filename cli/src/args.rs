//! The flags of `statefs mount` and of the commands that work on a store, built from the option
//! registry (`statefs::options::OPTIONS`): one flag per option, with the option's type, help and
//! environment variable, so that a new option needs no CLI code.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, FromArgMatches};
use statefs::MountConfig;
use statefs::options::{self, Kind, OptionSpec, Settings};

/// How `--help` names a flag's value.
fn value_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bytes => "SIZE",
        Kind::Count => "N",
        Kind::Number | Kind::Ratio => "NUMBER",
        Kind::Duration => "DURATION",
        Kind::Choice(_) => "CHOICE",
        _ => "TEXT",
    }
}

/// The flags of `specs`, as arguments identified by their keys.
fn registry_args(mut cmd: clap::Command, specs: &[&'static OptionSpec]) -> clap::Command {
    for spec in specs {
        let long = spec.flag.trim_start_matches("--");
        let short_help = spec
            .description
            .split_once(". ")
            .map_or(spec.description, |(first, _)| first);
        let mut arg = Arg::new(spec.key)
            .long(long)
            .help(short_help.trim_end_matches('.').to_string())
            .long_help(format!("{} (`{}`)", spec.description, spec.key));
        arg = match spec.kind {
            Kind::Bool => arg.action(ArgAction::SetTrue),
            kind => arg.action(ArgAction::Set).value_name(value_name(kind)),
        };
        if !spec.env.is_empty() {
            arg = arg.env(spec.env).hide_env_values(true);
        }
        if spec.kind == Kind::Secret {
            // Accepted by the parser only to be refused with the reason.
            arg = arg.hide(true);
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// The values given for `specs` (flags or their environment variables), as text.
fn registry_values(
    m: &ArgMatches,
    specs: &[&'static OptionSpec],
) -> Vec<(&'static OptionSpec, String)> {
    specs
        .iter()
        .filter_map(|spec| {
            let value = match spec.kind {
                Kind::Bool => m.get_flag(spec.key).then(|| "true".to_string()),
                _ => m.get_one::<String>(spec.key).cloned(),
            };
            value.map(|v| (*spec, v))
        })
        .collect()
}

/// Sets `values` in `settings` as flags: a secret is refused (every local user can read a
/// command line), a bad value names the flag.
fn apply(settings: &mut Settings, values: &[(&'static OptionSpec, String)]) -> anyhow::Result<()> {
    for (spec, v) in values {
        settings
            .set_from_command_line(spec.key, v)
            .map_err(|e| anyhow::anyhow!("{}: {e}", spec.flag))?;
    }
    Ok(())
}

/// `statefs mount` flags. Every flag is optional here: defaults live in the option registry
/// (`statefs config`), a `--config` file comes next, `--set` and flags last.
pub struct MountArgs {
    pub mountpoint: PathBuf,
    /// Detach once the mount is live (`--daemon`).
    pub daemon: bool,
    /// The daemon's log (`--log-file`); `None`: stderr, or `<local-dir>/statefs.log` with
    /// `--daemon`.
    pub log_file: Option<PathBuf>,
    /// How long `--daemon` waits for the mount to come up.
    pub ready_timeout: String,
    config: Option<PathBuf>,
    sets: Vec<String>,
    flags: Vec<(&'static OptionSpec, String)>,
}

fn mount_specs() -> Vec<&'static OptionSpec> {
    options::OPTIONS.iter().collect()
}

impl clap::Args for MountArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd
            .arg(
                Arg::new("mountpoint")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Empty directory to mount on"),
            )
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("YAML file of options (keys as `statefs config` lists them)"),
            )
            .arg(
                Arg::new("daemon")
                    .long("daemon")
                    .action(ArgAction::SetTrue)
                    .help("Run in the background: return once the mount is live (non-zero if it never comes up)"),
            )
            .arg(
                Arg::new("log-file")
                    .long("log-file")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Append the log here (default: stderr; with --daemon, <local-dir>/statefs.log)"),
            )
            .arg(
                Arg::new("ready-timeout")
                    .long("ready-timeout")
                    .value_name("DURATION")
                    .default_value("5min")
                    .help("With --daemon: give up (and stop the daemon) if the mount is not live by then"),
            )
            .arg(
                Arg::new("set")
                    .long("set")
                    .value_name("KEY=VALUE")
                    .action(ArgAction::Append)
                    .help("Any option by key, e.g. --set state.backend.forst.cache.size-based-limit=1gb (repeatable)"),
            );
        registry_args(cmd, &mount_specs())
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for MountArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(MountArgs {
            mountpoint: m
                .get_one::<PathBuf>("mountpoint")
                .cloned()
                .expect("required"),
            config: m.get_one::<PathBuf>("config").cloned(),
            daemon: m.get_flag("daemon"),
            log_file: m.get_one::<PathBuf>("log-file").cloned(),
            ready_timeout: m
                .get_one::<String>("ready-timeout")
                .cloned()
                .expect("has a default"),
            sets: m
                .get_many::<String>("set")
                .map(|v| v.cloned().collect())
                .unwrap_or_default(),
            flags: registry_values(m, &mount_specs()),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl MountArgs {
    /// The mount configuration: defaults, the `--config` file, `--set`, then flags.
    pub fn config(&self) -> anyhow::Result<MountConfig> {
        let mut settings = Settings::default();
        if let Some(path) = &self.config {
            settings.load_yaml_file(path)?;
        }
        for kv in &self.sets {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--set takes KEY=VALUE, not {kv:?}"))?;
            settings.set_from_command_line(k.trim(), v.trim())?;
        }
        apply(&mut settings, &self.flags)?;
        Ok(settings.mount_config()?)
    }
}

/// Which object store, for the commands that work on a store without a mount: `--remote` and the
/// `statefs.s3.*` options' flags.
pub struct RemoteArgs {
    flags: Vec<(&'static OptionSpec, String)>,
}

fn remote_specs() -> Vec<&'static OptionSpec> {
    options::OPTIONS
        .iter()
        .filter(|o| o.key == options::REMOTE || o.key.starts_with("statefs.s3."))
        .collect()
}

impl clap::Args for RemoteArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        registry_args(cmd, &remote_specs()).mut_arg(options::REMOTE, |a| {
            a.required(true)
                .help("The store: file:///abs/path, s3://, gs:// or az://bucket/prefix")
                .long_help("The store: file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix (credentials from the environment)")
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for RemoteArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(RemoteArgs {
            flags: registry_values(m, &remote_specs()),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl RemoteArgs {
    /// The store, behind the retry layer, and the runtime that drives it.
    pub fn open(
        &self,
    ) -> anyhow::Result<(
        std::sync::Arc<dyn statefs::store::RemoteStore>,
        std::sync::Arc<tokio::runtime::Runtime>,
    )> {
        let mut settings = Settings::default();
        apply(&mut settings, &self.flags)?;
        let url = settings
            .text(options::REMOTE)
            .expect("--remote is required");
        let runtime = statefs::mount::runtime()?;
        // The secret key, like the session token, comes from the environment (object_store
        // reads AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN itself).
        let s3 = settings.s3_options();
        let spec = statefs::store::RemoteSpec::parse(&url)?;
        if spec == statefs::store::RemoteSpec::Memory {
            anyhow::bail!(
                "memory:// lives inside one mount process; nothing to inspect from outside"
            );
        }
        let store = spec.open(&s3, runtime.clone())?;
        let retrying =
            statefs::store::RetryingRemote::new(store, statefs::store::RetryPolicy::default());
        Ok((std::sync::Arc::new(retrying), runtime))
    }
}
