//! Wiring: the store, the eventhub service, health and reflection, served on
//! an already-bound listener until `shutdown` resolves.

use crate::access::Gate;
use crate::config::Config;
use crate::proto::{self, event_hub_service_server::EventHubServiceServer};
use crate::service::Hub;
use crate::store::Store;
use futures::StreamExt;
use futures::task::AtomicWaker;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Serves the hub on `listener` until `shutdown` resolves; then open streams
/// end cleanly, in-flight calls finish and the database connections are
/// closed before this returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::open(&config).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let hub = Hub::new(
        store.clone(),
        config.limits.clone(),
        config.default_partitions,
        stop_rx,
        Gate::new(config.tokens.clone()),
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EventHubServiceServer<Hub>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let service = EventHubServiceServer::new(hub)
        .max_decoding_message_size(config.limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    tracing::info!(addr = %listener.local_addr()?, database = %config.database_url, tokens_required = config.tokens.is_some(), "eventhub serving");
    let mut stopping = stop_tx.subscribe();
    let connections = Arc::new(Connections::default());
    let incoming = {
        let connections = connections.clone();
        TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .map(move |tcp| tcp.map(|tcp| connections.guard(tcp)))
    };
    let stopped = connections.clone();
    let serve = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service)
        // No Nagle: a response must not wait for the client's delayed ACK.
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            stopped.raise(|c| &c.stopping);
        });
    // Once stopping, the server waits for every connection to finish its
    // calls; a stream whose client stopped reading never does. After the
    // grace period the connections still open are closed (`Connections`),
    // so that their tasks let go of the store.
    let grace = config.shutdown_grace;
    tokio::select! {
        served = serve => served?,
        _ = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("calls still in progress {grace:?} after the shutdown began; closing their connections");
            connections.raise(|c| &c.closing);
        }
    }
    // Every call has finished and the service is gone with its clones of
    // the store; a stream task that has not noticed the shutdown yet holds
    // one for a moment at most.
    if tokio::time::timeout(CLOSE_TIMEOUT, store.close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close within {CLOSE_TIMEOUT:?}; exiting anyway");
    }
    Ok(())
}

/// How long shutting down waits for the writer to stop and the database
/// connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's connections, which shutting down can end from outside.
/// hyper closes a connection gracefully only once its HTTP/2 preface has
/// arrived, so a connection that never sends one (a TCP health probe, a
/// client that connected and went quiet) would hold up shutting down for the
/// whole grace period: once `stopping`, such a connection reads as closed by
/// its peer. And a connection whose calls are still stuck when the grace
/// period ends (a stream to a client that stopped reading, waiting for room
/// in the client's window or its socket) fails its next wait, once
/// `closing`, so that its task ends and lets go of the store.
#[derive(Default)]
struct Connections {
    open: Mutex<Vec<Weak<AtomicWaker>>>,
    stopping: AtomicBool,
    closing: AtomicBool,
}

impl Connections {
    fn guard(self: &Arc<Self>, tcp: TcpStream) -> Guarded {
        let waker = Arc::new(AtomicWaker::new());
        let mut open = self.open.lock().unwrap();
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&waker));
        Guarded {
            tcp,
            waker,
            started: false,
            all: self.clone(),
        }
    }

    /// Sets `flag` and wakes every connection waiting for its socket, so
    /// that it looks at the flag.
    fn raise(&self, flag: impl Fn(&Connections) -> &AtomicBool) {
        flag(self).store(true, Ordering::SeqCst);
        for waker in self.open.lock().unwrap().iter().filter_map(Weak::upgrade) {
            waker.wake();
        }
    }
}

/// One connection of [`Connections`]. It looks at their flags only when its
/// socket is not ready: a connection at work pays nothing for them.
struct Guarded {
    tcp: TcpStream,
    /// Woken when a flag of [`Connections`] is raised.
    waker: Arc<AtomicWaker>,
    /// The peer has sent something.
    started: bool,
    all: Arc<Connections>,
}

impl Guarded {
    /// Whether the connection is to end now rather than wait: `Err` once
    /// closing, the end of the stream when stopping before the peer sent
    /// anything. Registers the task to be woken when that changes (before
    /// looking, so that a flag raised meanwhile is not missed).
    fn ends(&self, cx: &mut Context<'_>) -> Option<std::io::Result<()>> {
        self.waker.register(cx.waker());
        if self.all.closing.load(Ordering::SeqCst) {
            Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the hub shut down while this connection waited",
            )))
        } else if !self.started && self.all.stopping.load(Ordering::SeqCst) {
            Some(Ok(()))
        } else {
            None
        }
    }

    /// A write's outcome, or a failure if it has to wait and the connection is to end.
    fn write<T>(
        &self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match poll {
            Poll::Pending => match self.ends(cx) {
                Some(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(read) => {
                this.started |= buf.filled().len() > before;
                Poll::Ready(read)
            }
            Poll::Pending => this.ends(cx).map_or(Poll::Pending, Poll::Ready),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_flush(cx);
        self.write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}
