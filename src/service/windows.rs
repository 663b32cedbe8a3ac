//! The same binary as a Windows service (windows-service crate).
//!
//! `ftpdrop service install --config C:\ProgramData\ftpdrop\config.json`
//! registers `ftpdrop.exe run --service --config ...` with the service
//! control manager (SCM). Started by the SCM, `run --service` connects to
//! it, reports StartPending at once (the SCM gives up with error 1053 on a
//! service that stays silent), Running once the daemon is ready, and turns
//! Stop and Shutdown into the same shutdown path SIGTERM takes on Linux:
//! intake stops, uploads get the grace period, StopPending is reported with
//! a wait hint (and a fresh checkpoint every few seconds), then Stopped.

use super::Supervisor;
use crate::config::Config;
use anyhow::{anyhow, Context, Result};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

pub const SERVICE_NAME: &str = "ftpdrop";
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;
/// How long the SCM is asked to wait beyond the grace period at a stop.
const STOP_MARGIN: Duration = Duration::from_secs(15);

/// Where a service logs when the config names no `log.dir`.
pub fn default_log_dir() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("ftpdrop")
        .join("logs")
}

/// What runs the daemon, given the service manager to report to and the
/// token its Stop cancels: the CLI's one wiring, the same a terminal and
/// systemd get. It builds the runtime and returns when the daemon has
/// stopped.
pub type Daemon = Box<dyn FnOnce(Arc<dyn Supervisor>, CancellationToken) -> Result<()> + Send>;

/// The daemon for the service's main, which the dispatcher calls on a
/// thread of its own with nothing but the service's arguments.
static START: Mutex<Option<Daemon>> = Mutex::new(None);

/// Runs `daemon` as a service: blocks until the SCM has stopped it.
pub fn run_as_service(daemon: Daemon) -> Result<()> {
    *START.lock().unwrap() = Some(daemon);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "cannot connect to the service control manager: `run --service` is for the \
         service manager; in a console use `ftpdrop run`",
    )
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_args: Vec<OsString>) {
    if let Err(e) = serve() {
        tracing::error!(error = %format!("{e:#}"), "the service failed");
    }
}

/// What the daemon tells the SCM.
struct Scm {
    handle: service_control_handler::ServiceStatusHandle,
    checkpoint: AtomicU32,
    stopped: AtomicBool,
}

impl Scm {
    fn report(&self, state: ServiceState, wait: Duration) {
        let pending = matches!(
            state,
            ServiceState::StartPending | ServiceState::StopPending
        );
        let accepts = match state {
            ServiceState::Running => ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            _ => ServiceControlAccept::empty(),
        };
        let status = ServiceStatus {
            service_type: SERVICE_TYPE,
            current_state: state,
            controls_accepted: accepts,
            exit_code: ServiceExitCode::Win32(0),
            checkpoint: if pending {
                self.checkpoint.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                0
            },
            wait_hint: if pending { wait } else { Duration::ZERO },
            process_id: None,
        };
        if let Err(e) = self.handle.set_service_status(status) {
            tracing::warn!(error = %e, "cannot report the service status");
        }
    }
}

impl Supervisor for Scm {
    fn ready(&self) {
        self.report(ServiceState::Running, Duration::ZERO);
    }

    fn stopping(&self, grace: Duration) {
        // `serve`'s thread then reports a fresh checkpoint every few seconds.
        self.report(ServiceState::StopPending, grace + STOP_MARGIN);
    }
}

fn serve() -> Result<()> {
    let daemon = START
        .lock()
        .unwrap()
        .take()
        .ok_or_else(|| anyhow!("the service started without a daemon to run"))?;
    let stop = CancellationToken::new();
    let handler = {
        let stop = stop.clone();
        move |event| match event {
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
                stop.cancel();
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        }
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .context("cannot register with the service control manager")?;
    let scm = Arc::new(Scm {
        handle,
        checkpoint: AtomicU32::new(0),
        stopped: AtomicBool::new(false),
    });
    scm.report(ServiceState::StartPending, Duration::from_secs(30));

    // Checkpoints while stopping, from a thread of its own: the runtime may
    // be busy. Dropping `done` ends it at once.
    let (done, beats) = std::sync::mpsc::channel::<()>();
    let beat = {
        let scm = scm.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                beats.recv_timeout(Duration::from_secs(3))
            {
                if stop.is_cancelled() && !scm.stopped.load(Ordering::SeqCst) {
                    scm.report(ServiceState::StopPending, Duration::from_secs(10));
                }
            }
        })
    };
    let result = daemon(scm.clone(), stop.clone());
    scm.stopped.store(true, Ordering::SeqCst);
    drop(done);
    let _ = beat.join();
    let exit = if result.is_ok() { 0 } else { 1 };
    let _ = scm.handle.set_service_status(ServiceStatus {
        service_type: SERVICE_TYPE,
        current_state: ServiceState::Stopped,
        controls_accepted: ServiceControlAccept::empty(),
        exit_code: ServiceExitCode::Win32(exit),
        checkpoint: 0,
        wait_hint: Duration::ZERO,
        process_id: None,
    });
    result
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access)
        .context("cannot open the service control manager (run as Administrator)")
}

/// Registers the service: `ftpdrop.exe run --service --config <config>`, started at boot.
pub fn install(config: &Path) -> Result<()> {
    let config =
        std::path::absolute(config).with_context(|| format!("--config {}", config.display()))?;
    Config::load(Some(&config)).context("the service's configuration")?;
    let exe = std::env::current_exe().context("cannot find ftpdrop.exe")?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: "ftpdrop FTP/FTPS upload daemon".into(),
        service_type: SERVICE_TYPE,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: vec![
            "run".into(),
            "--service".into(),
            "--config".into(),
            config.into_os_string(),
        ],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let m = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let service = m
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .context("cannot create the service")?;
    let _ = service.set_description(
        "Uploads the files named by JSON job files to FTP/FTPS servers, verified and crash-safe",
    );
    Ok(())
}

/// Stops (if running) and removes the service.
pub fn uninstall() -> Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let service = m
        .open_service(
            SERVICE_NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .context("cannot open the service")?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        let _ = service.stop();
    }
    service.delete().context("cannot delete the service")
}

pub fn start() -> Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let service = m
        .open_service(SERVICE_NAME, ServiceAccess::START)
        .context("cannot open the service")?;
    service
        .start::<&OsStr>(&[])
        .context("cannot start the service")
}

pub fn stop() -> Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let service = m
        .open_service(SERVICE_NAME, ServiceAccess::STOP)
        .context("cannot open the service")?;
    service.stop().context("cannot stop the service")?;
    Ok(())
}

/// The service's state, e.g. `Running`.
pub fn status() -> Result<String> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let service = m
        .open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS)
        .context("cannot open the service")?;
    Ok(format!("{:?}", service.query_status()?.current_state))
}
