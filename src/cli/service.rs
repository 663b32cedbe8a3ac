//! `service`: the Windows service manager's side (install, start, stop).

#[cfg(not(windows))]
use super::args::ServiceAction;
use anyhow::Result;
use std::process::ExitCode;

#[cfg(windows)]
pub fn service(action: super::args::ServiceAction) -> Result<ExitCode> {
    use ftpdrop::service::windows as svc;
    match action {
        super::args::ServiceAction::Install { config } => {
            svc::install(&config)?;
            println!("service {} installed", svc::SERVICE_NAME);
        }
        super::args::ServiceAction::Uninstall => {
            svc::uninstall()?;
            println!("service {} removed", svc::SERVICE_NAME);
        }
        super::args::ServiceAction::Start => svc::start()?,
        super::args::ServiceAction::Stop => svc::stop()?,
        super::args::ServiceAction::Status => println!("{}", svc::status()?),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(windows))]
pub fn service(_: ServiceAction) -> Result<ExitCode> {
    anyhow::bail!(
        "`ftpdrop service` manages the Windows service; on Linux install the systemd unit \
         (packaging/systemd/ftpdrop.service, see the README's \"Install on Linux\")"
    )
}
