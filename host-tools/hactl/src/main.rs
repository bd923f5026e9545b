//! hactl: PSK provisioning, cluster create/join/replace, status and control, configuration sync.
//!
//! Exit codes: 0 success, 1 operation failed, 2 bad command line, 3 refused input (weak
//! passphrase, invalid value, existing file), 4 file error, 5 daemon unreachable, 6 missing,
//! corrupt or invalid configuration image.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hactl::exit::{Code, Failure, Result};
use hactl::{inspect, provision, pskfile, strength};

const EXIT_CODES: &str = "Exit codes: 0 success, 1 operation failed, 2 bad command line, \
3 refused input (weak passphrase, invalid value, existing file), 4 file error, \
5 daemon unreachable, 6 missing/corrupt/invalid configuration image.";

#[derive(Parser)]
#[command(name = "hactl", version, about = "Operate an HA cluster: keys, provisioning, status, control, configuration sync", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster pre-shared key: generate, check a passphrase.
    #[command(subcommand)]
    Psk(PskCmd),
    /// Write a member's flash configuration block to an image file (mode 0600).
    Provision(ProvisionArgs),
    /// Show what a configuration image holds (never the key, only its fingerprint).
    Inspect {
        /// The image file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PskCmd {
    /// Generate a 256-bit key from the OS CSPRNG into a file with mode 0600.
    Generate {
        /// Where to write the key (64 hex digits).
        #[arg(long, short)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Also print the key on standard output (it is never printed otherwise).
        #[arg(long)]
        show: bool,
        /// Derive the key from a passphrase read from standard input (or --passphrase-file)
        /// instead; the passphrase must pass `psk check`.
        #[arg(long)]
        from_passphrase: bool,
        /// File holding the passphrase (with --from-passphrase).
        #[arg(long, requires = "from_passphrase")]
        passphrase_file: Option<PathBuf>,
    },
    /// Rate a passphrase (read from standard input or --file, never from the command line);
    /// exits 3 when it is too short or guessable.
    Check {
        /// File holding the passphrase.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Words an attacker would try first (cluster name, site, serials).
        #[arg(long = "context")]
        context: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ProvisionArgs {
    /// Key file (from `hactl psk generate`).
    #[arg(long)]
    psk_file: PathBuf,
    /// This member's serial.
    #[arg(long)]
    serial: String,
    /// Cluster id.
    #[arg(long)]
    cluster_id: u32,
    /// Key id of the PSK (changes on every rotation).
    #[arg(long, default_value_t = 1)]
    key_id: u8,
    /// A member as SERIAL=IP:PORT of its main HA link; repeat for each, in cluster order,
    /// this member included.
    #[arg(long = "member", required = true)]
    members: Vec<String>,
    /// The backup HA link (serial line) is wired.
    #[arg(long)]
    backup_link: bool,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    #[arg(long)]
    encrypt: bool,
    /// UDP port of the connection-state sync.
    #[arg(long, default_value_t = ha_proto::config_block::DEFAULT_STATE_SYNC_PORT)]
    state_sync_port: u16,
    /// Timer profile: default, fast or custom:INTERVAL_MS:MISS_LIMIT.
    #[arg(long, default_value = "default")]
    timers: String,
    /// A domain as ID or ID=SERIAL (SERIAL is active when qualities are equal); default 0.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// When an aggregate counts as down: all-down or any-down.
    #[arg(long, default_value = "all-down")]
    aggregate: String,
    /// Count the TPM in the quality factor.
    #[arg(long)]
    tpm: bool,
    /// Hardware weight KIND=WEIGHT (disk, raid, tpm, psu, fan, module; 0..=9999).
    #[arg(long = "weight")]
    weights: Vec<String>,
    /// Output image.
    #[arg(long, short)]
    out: PathBuf,
    /// Replace an existing image.
    #[arg(long)]
    force: bool,
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Failure::new(Code::Failed, format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Psk(PskCmd::Generate {
            out,
            force,
            show,
            from_passphrase,
            passphrase_file,
        }) => {
            let psk = if from_passphrase {
                let pass = pskfile::read_passphrase(passphrase_file.as_deref())?;
                let v = strength::check(&pass, &[]);
                if !v.accepted {
                    return Err(Failure::new(
                        Code::Refused,
                        format!(
                            "passphrase refused: {}",
                            v.reason.unwrap_or_else(|| "too weak".into())
                        ),
                    ));
                }
                pskfile::from_passphrase(&pass)
            } else {
                pskfile::generate()?
            };
            pskfile::write(&out, &psk, force)?;
            eprintln!(
                "wrote a 256-bit key to {} (mode 600), fingerprint {}",
                out.display(),
                hex(&ha_proto::config_block::psk_fingerprint(&psk))
            );
            if show {
                let text = pskfile::to_hex(&psk);
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{}", &*text);
            }
            Ok(())
        }
        Cmd::Psk(PskCmd::Check {
            file,
            context,
            json,
        }) => {
            let pass = pskfile::read_passphrase(file.as_deref())?;
            let ctx: Vec<&str> = context.iter().map(String::as_str).collect();
            let v = strength::check(&pass, &ctx);
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "score {}/4, about 10^{:.1} guesses, {} characters: {}",
                    v.score,
                    v.guesses_log10,
                    v.length,
                    if v.accepted { "accepted" } else { "refused" }
                );
                for s in &v.suggestions {
                    println!("  suggestion: {s}");
                }
            }
            if v.accepted {
                Ok(())
            } else {
                Err(Failure::new(
                    Code::Refused,
                    format!(
                        "passphrase refused: {}",
                        v.reason.unwrap_or_else(|| "too weak".into())
                    ),
                ))
            }
        }
        Cmd::Provision(a) => {
            let psk = pskfile::read(&a.psk_file)?;
            let plan = provision::Plan {
                serial: a.serial,
                cluster_id: a.cluster_id,
                key_id: a.key_id,
                encrypt: a.encrypt,
                members: a.members,
                backup_link: a.backup_link,
                state_sync_port: a.state_sync_port,
                timers: a.timers,
                domains: a.domains,
                aggregate: a.aggregate,
                tpm: a.tpm,
                weights: a.weights,
            };
            let block = plan.block(psk)?;
            provision::write_image(&block, &a.out, a.force)?;
            eprintln!(
                "wrote the configuration image of {} to {} (mode 600)",
                block.serial,
                a.out.display()
            );
            Ok(())
        }
        Cmd::Inspect { file, json } => {
            let block = provision::read_image(&file)?;
            let v = inspect::view(&block);
            if json {
                print_json(&v)
            } else {
                print!("{}", inspect::render(&v));
                Ok(())
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("hactl: {}", f.message);
            ExitCode::from(f.code as u8)
        }
    }
}
