//! The whole link in one process: receiver, channel simulator and transmitter served on
//! 127.0.0.1 ports chosen by the system, wired to each other, and stopped together. Used by
//! `semclip demo`, `semclip eval --in-process`, `semclip bench` and the integration tests.
//!
//! Each service runs its library's `serve(config, listener, shutdown)` in a task of its own
//! with its own shutdown signal, so that one service can be stopped and started again on
//! the same port (the integration tests restart the channel simulator this way).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use semclip_common::config::MetricsAddr;
use semclip_common::Device;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::{Endpoints, LinkClient};
use crate::rpc::Service;

/// Longest wait for all three services to report SERVING (model loading included).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// What the in-process link is started with; everything else takes the daemons' defaults
/// (and their `SEMCLIP_*` environment variables).
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Model bundle served by transmitter and receiver.
    pub bundle: PathBuf,
    /// Complex channel uses per image (the bundle's default when `None`).
    pub k: Option<u32>,
    /// Where the ONNX models run.
    pub device: Device,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            bundle: PathBuf::from("bundles/tiny-lit"),
            k: None,
            device: Device::Auto,
        }
    }
}

/// One running service: its address, the sender that stops it, and its task.
struct Running {
    address: SocketAddr,
    /// Dropping or sending on it completes the service's shutdown future.
    stop: oneshot::Sender<()>,
    /// Completes when `serve` returns, with its result.
    task: JoinHandle<Result<(), semclip_common::ServeError>>,
}

impl Running {
    /// Asks the service to stop and waits until `serve` has returned.
    async fn stop(self, service: Service) -> Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .with_context(|| format!("{} task panicked", service.name()))?
            .with_context(|| format!("{} stopped with an error", service.name()))
    }
}

/// Receiver, channel simulator and transmitter running in this process.
pub struct LocalLink {
    options: LocalOptions,
    receiver: Running,
    /// `None` while stopped by [`LocalLink::stop_channel`].
    channel: Option<Running>,
    /// Address the channel simulator is (or was last) served on.
    channel_address: SocketAddr,
    transmitter: Running,
}

fn spawn<F, Fut>(listener: TcpListener, serve: F) -> Result<Running>
where
    F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
    Fut: Future<Output = Result<(), semclip_common::ServeError>> + Send + 'static,
{
    let address = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(serve(listener, stopped));
    Ok(Running {
        address,
        stop,
        task,
    })
}

async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))
}

fn url(address: SocketAddr) -> String {
    format!("http://{address}")
}

fn serve_channel(listener: TcpListener, receiver: SocketAddr) -> Result<Running> {
    let mut config = semclip_channel_sim::Config::from_env();
    config.receiver = url(receiver);
    config.metrics_addr = MetricsAddr::OFF;
    config.listen = listener.local_addr()?;
    spawn(listener, move |l, stopped| {
        semclip_channel_sim::serve(config, l, async move {
            let _ = stopped.await;
        })
    })
}

impl LocalLink {
    /// Starts receiver, channel simulator and transmitter on 127.0.0.1 ports chosen by the
    /// system, and returns once all three report SERVING on gRPC health.
    pub async fn start(options: LocalOptions) -> Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));

        let mut rx_config = semclip_receiver::Config::from_env();
        rx_config.model.bundle = options.bundle.clone();
        rx_config.model.device = options.device;
        rx_config.metrics_addr = MetricsAddr::OFF;
        let listener = bind(any).await?;
        rx_config.listen = listener.local_addr()?;
        let receiver = spawn(listener, move |l, stopped| {
            semclip_receiver::serve(rx_config, l, async move {
                let _ = stopped.await;
            })
        })?;

        let channel = serve_channel(bind(any).await?, receiver.address)?;
        let channel_address = channel.address;

        let mut tx_config = semclip_transmitter::Config::from_env();
        tx_config.model.bundle = options.bundle.clone();
        tx_config.model.device = options.device;
        tx_config.k = options.k;
        tx_config.channel = url(channel_address);
        tx_config.metrics_addr = MetricsAddr::OFF;
        let listener = bind(any).await?;
        tx_config.listen = listener.local_addr()?;
        let transmitter = spawn(listener, move |l, stopped| {
            semclip_transmitter::serve(tx_config, l, async move {
                let _ = stopped.await;
            })
        })?;

        let mut link = Self {
            options,
            receiver,
            channel: Some(channel),
            channel_address,
            transmitter,
        };
        link.wait_started().await?;
        Ok(link)
    }

    /// Waits for SERVING on all three, or reports the service that failed to start with
    /// the error its `serve` returned. On failure the link is dropped by the caller, which
    /// closes every shutdown channel and so stops the services still running.
    async fn wait_started(&mut self) -> Result<()> {
        let client = self.client()?;
        let ready = client.wait_serving(START_TIMEOUT);
        tokio::pin!(ready);
        // A service whose `serve` returns early (bad bundle, say) is reported at once
        // instead of after the health timeout.
        loop {
            tokio::select! {
                result = &mut ready => return result.map_err(Into::into),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    for (service, running) in self.running_mut() {
                        if running.task.is_finished() {
                            let why = match (&mut running.task).await {
                                Ok(Ok(())) => "without an error".to_string(),
                                Ok(Err(e)) => e.to_string(),
                                Err(e) => format!("by a panic: {e}"),
                            };
                            return Err(anyhow!(
                                "the {} stopped during start-up: {why}",
                                service.name()
                            ));
                        }
                    }
                }
            }
        }
    }

    fn running_mut(&mut self) -> Vec<(Service, &mut Running)> {
        let mut all = vec![
            (Service::Receiver, &mut self.receiver),
            (Service::Transmitter, &mut self.transmitter),
        ];
        if let Some(c) = &mut self.channel {
            all.push((Service::Channel, c));
        }
        all
    }

    /// The options the link was started with.
    pub fn options(&self) -> &LocalOptions {
        &self.options
    }

    /// The three addresses, as `http://127.0.0.1:PORT`.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            transmitter: url(self.transmitter.address),
            channel: url(self.channel_address),
            receiver: url(self.receiver.address),
        }
    }

    /// Clients of the three services.
    pub fn client(&self) -> Result<LinkClient> {
        Ok(LinkClient::new(self.endpoints())?)
    }

    /// Stops the channel simulator and waits until it has stopped; its port is free until
    /// [`LocalLink::start_channel`].
    pub async fn stop_channel(&mut self) -> Result<()> {
        match self.channel.take() {
            Some(c) => c.stop(Service::Channel).await,
            None => Ok(()),
        }
    }

    /// Starts the channel simulator again on the port it had, and waits until it serves.
    pub async fn start_channel(&mut self) -> Result<()> {
        if self.channel.is_some() {
            return Ok(());
        }
        let listener = bind(self.channel_address).await?;
        self.channel = Some(serve_channel(listener, self.receiver.address)?);
        self.wait_started().await
    }

    /// Stops all three services (transmitter first) and waits for them.
    pub async fn shutdown(self) -> Result<()> {
        self.transmitter.stop(Service::Transmitter).await?;
        if let Some(c) = self.channel {
            c.stop(Service::Channel).await?;
        }
        self.receiver.stop(Service::Receiver).await
    }
}
