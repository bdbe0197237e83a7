//! `mount.fuse.statefs`: the helper that mount(8) runs for `mount -t fuse.statefs REMOTE MNT -o
//! OPTIONS` and for fstab lines of type `fuse.statefs`. It is the statefs executable under that
//! name (a symlink); its arguments become `statefs mount --daemon`'s.
//!
//! mount(8) calls `mount.fuse.statefs SPEC DIR [-sfnv] [-o OPTIONS]`. Each option is one of:
//! - a mount(8) or systemd option, accepted and left to them: `defaults`, `rw`, `auto`, `noauto`,
//!   `user`, `nouser`, `users`, `_netdev`, `nofail`, `x-*` (`x-systemd.*`), `comment=*`,
//!   `dev`/`nodev`, `suid`/`nosuid`, `exec`/`noexec`, `atime`/`noatime`/`relatime`;
//! - `config=FILE` (`--config`), `log_file=FILE` (`--log-file`), `env_file=FILE`: `KEY=VALUE`
//!   lines set in the daemon's environment (store credentials), refused if others may read it;
//! - a registry key (`statefs.cache.warm.memory=0`) or the name of its flag with `_` for `-`
//!   (`local_dir=/var/lib/x` is `--local-dir /var/lib/x`, `allow_other` is `--allow-other`).
//!
//! Anything else is an error naming the option (with `-s`, sloppy, a warning). Secrets are
//! refused as on any command line: fstab and the process list are readable by every user.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, bail};
use statefs::options::{self, Kind};

/// Options mount(8), systemd or the kernel's generic mount flags own; the daemon ignores them.
fn ignored(opt: &str) -> bool {
    const PLAIN: &[&str] = &[
        "defaults",
        "rw",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "_netdev",
        "nofail",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "diratime",
        "nodiratime",
        "async",
    ];
    PLAIN.contains(&opt)
        || opt.starts_with("x-")
        || opt.starts_with("comment=")
        || opt.starts_with("helper=")
}

/// What mount(8) asked for, as `statefs` arguments.
#[derive(Debug, PartialEq)]
pub struct HelperCall {
    /// `statefs mount --daemon ...`, or `None` for `-f` (fake: check, mount nothing).
    pub args: Vec<OsString>,
    pub fake: bool,
    /// `env_file=` entries to put in the daemon's environment.
    pub env: Vec<(String, String)>,
}

/// Translates the helper's command line (without argv\[0\]).
pub fn translate(argv: &[OsString]) -> anyhow::Result<HelperCall> {
    let mut positional = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let (mut fake, mut sloppy) = (false, false);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a
            .to_str()
            .ok_or_else(|| anyhow!("argument {a:?} is not UTF-8"))?;
        match s {
            "-o" => {
                let v = it.next().ok_or_else(|| anyhow!("-o needs a value"))?;
                let v = v.to_str().ok_or_else(|| anyhow!("-o {v:?} is not UTF-8"))?;
                opts.extend(v.split(',').filter(|o| !o.is_empty()).map(str::to_string));
            }
            "-t" => {
                it.next();
            }
            _ if s.starts_with("-o") => opts.extend(
                s[2..]
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            ),
            _ if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'f' => fake = true,
                        's' => sloppy = true,
                        'n' | 'v' => {}
                        _ => bail!(
                            "unknown flag -{c} (usage: mount.fuse.statefs REMOTE DIR [-sfnv] [-o OPTIONS])"
                        ),
                    }
                }
            }
            _ => positional.push(a.clone()),
        }
    }
    let [remote, dir] = <[OsString; 2]>::try_from(positional).map_err(|p| {
        anyhow!(
            "expected REMOTE and DIR, got {} arguments (usage: mount.fuse.statefs REMOTE DIR [-sfnv] [-o OPTIONS])",
            p.len()
        )
    })?;
    let mut args: Vec<OsString> = ["statefs", "mount", "--daemon", "--remote"]
        .iter()
        .map(OsString::from)
        .collect();
    args.push(remote);
    let mut env = Vec::new();
    for opt in &opts {
        if ignored(opt) {
            continue;
        }
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt.as_str(), None),
        };
        match (name, value) {
            ("config", Some(v)) => args.extend(["--config".into(), v.into()]),
            ("log_file", Some(v)) => args.extend(["--log-file".into(), v.into()]),
            ("env_file", Some(v)) => env.extend(read_env_file(Path::new(v))?),
            ("ro", None) => bail!("ro: statefs mounts are read-write only"),
            _ => match registry_option(name, value)? {
                Some(more) => args.extend(more),
                None if sloppy => eprintln!("mount.fuse.statefs: ignoring unknown option {opt:?}"),
                None => bail!(
                    "unknown mount option {opt:?} (options: statefs config keys, their flags' names with _ for -, config=, log_file=, env_file=)"
                ),
            },
        }
    }
    args.push(dir);
    Ok(HelperCall { args, fake, env })
}

/// The flags for a registry option named by key or by flag name, `None` if there is none.
fn registry_option(name: &str, value: Option<&str>) -> anyhow::Result<Option<Vec<OsString>>> {
    let flag = format!("--{}", name.replace('_', "-"));
    let Some(spec) = options::OPTIONS
        .iter()
        .find(|o| o.key == name || (!o.flag.is_empty() && o.flag == flag))
    else {
        return Ok(None);
    };
    if spec.kind == Kind::Secret {
        bail!(
            "{name}: a secret is never a mount option (fstab and the process list are readable by every user); put it in config= (mode 0600) or env_file="
        );
    }
    let set = |v: &str| vec!["--set".into(), format!("{}={v}", spec.key).into()];
    Ok(Some(match (spec.kind, value) {
        (Kind::Bool, None) => set("true"),
        (_, Some(v)) => set(v),
        (_, None) => bail!("{name} needs a value: {name}=..."),
    }))
}

/// `KEY=VALUE` lines (blank lines and `#` comments skipped), from a file only its owner may
/// read: it holds credentials.
fn read_env_file(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|e| anyhow!("env_file {}: {e}", path.display()))?;
    if md.mode() & 0o077 != 0 {
        bail!(
            "env_file {} may be read by other users (mode {:o}); it holds credentials: chmod 600 it",
            path.display(),
            md.mode() & 0o777
        );
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow!("env_file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .strip_prefix("export ")
            .unwrap_or(line)
            .split_once('=')
            .ok_or_else(|| {
                anyhow!(
                    "env_file {} line {}: expected KEY=VALUE",
                    path.display(),
                    n + 1
                )
            })?;
        let v = v.trim().trim_matches('"');
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(line: &str) -> anyhow::Result<HelperCall> {
        let argv: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        translate(&argv)
    }

    fn shown(c: &HelperCall) -> String {
        c.args
            .iter()
            .map(|a| a.to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        let c = call("file:///srv/remote /mnt/s -o rw,_netdev,nofail,x-systemd.automount,x-systemd.mount-timeout=30,local_dir=/var/lib/s/local,cache_dir=/var/cache/s,config=/etc/statefs/s.yaml,statefs.cache.warm.memory=0,allow_other").unwrap();
        assert_eq!(
            shown(&c),
            "statefs mount --daemon --remote file:///srv/remote \
             --set state.backend.forst.local-dir=/var/lib/s/local \
             --set state.backend.forst.cache.dir=/var/cache/s \
             --config /etc/statefs/s.yaml --set statefs.cache.warm.memory=0 \
             --set statefs.fuse.allow-other=true /mnt/s"
        );
        assert!(!c.fake);
        assert!(call("r /m -f -o defaults").unwrap().fake);
    }

    #[test]
    fn bad_mount_options_are_refused_by_name() {
        for (line, why) in [
            (
                "r /m -o bogus_thing=1",
                "unknown mount option \"bogus_thing=1\"",
            ),
            ("r /m -o ro", "read-write only"),
            (
                "r /m -o s3_secret_access_key=x",
                "a secret is never a mount option",
            ),
            ("r /m -o local_dir", "needs a value"),
            ("r", "expected REMOTE and DIR"),
            ("r /m -q", "unknown flag -q"),
        ] {
            let err = call(line).unwrap_err().to_string();
            assert!(err.contains(why), "{line}: {err}");
        }
        // Sloppy (-s) lets unknown options through with a warning.
        call("r /m -s -o bogus_thing=1").unwrap();
    }

    #[test]
    fn env_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("creds.env");
        std::fs::write(
            &f,
            "# store\nAZURE_STORAGE_ACCOUNT_NAME=acct\nexport AZURE_STORAGE_ACCOUNT_KEY=\"k==\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let line = format!("r /m -o env_file={}", f.display());
        assert!(call(&line).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            call(&line).unwrap().env,
            vec![
                ("AZURE_STORAGE_ACCOUNT_NAME".to_string(), "acct".to_string()),
                ("AZURE_STORAGE_ACCOUNT_KEY".to_string(), "k==".to_string())
            ]
        );
    }
}
