//! The transport ceiling: a tonic server of the same `EventHubService`
//! whose Append returns a default response at once. Workload 2 sends it the
//! same requests it sends the hub, so the difference is what the hub does.
//!
//! It sets TCP_NODELAY on accepted connections, as a tuned gRPC server
//! does, so that it shows what the transport can do.

use anyhow::Result;
use eventhub::proto::event_hub_service_server::{EventHubService, EventHubServiceServer};
use eventhub::proto::*;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

struct Noop;

type Empty<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl EventHubService for Noop {
    async fn append(&self, _: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        Ok(Response::new(AppendResponse::default()))
    }

    type ReadPartitionStream = Empty<ReadPartitionResponse>;

    async fn read_partition(
        &self,
        _: Request<ReadPartitionRequest>,
    ) -> Result<Response<Self::ReadPartitionStream>, Status> {
        Err(Status::unimplemented("no-op server"))
    }

    type SurfaceStream = Empty<SurfaceResponse>;

    async fn surface(
        &self,
        _: Request<SurfaceRequest>,
    ) -> Result<Response<Self::SurfaceStream>, Status> {
        Err(Status::unimplemented("no-op server"))
    }

    type ReadKeyStream = Empty<ReadKeyResponse>;

    async fn read_key(
        &self,
        _: Request<ReadKeyRequest>,
    ) -> Result<Response<Self::ReadKeyStream>, Status> {
        Err(Status::unimplemented("no-op server"))
    }

    async fn invalidate(
        &self,
        _: Request<InvalidateRequest>,
    ) -> Result<Response<InvalidateResponse>, Status> {
        Err(Status::unimplemented("no-op server"))
    }

    async fn create_topic(
        &self,
        _: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        Err(Status::unimplemented("no-op server"))
    }

    async fn get_topic(
        &self,
        _: Request<GetTopicRequest>,
    ) -> Result<Response<GetTopicResponse>, Status> {
        Err(Status::unimplemented("no-op server"))
    }

    async fn list_topics(
        &self,
        _: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        Err(Status::unimplemented("no-op server"))
    }
}

/// The no-op server on a loopback port until [`NoopServer::stop`].
pub struct NoopServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl NoopServer {
    pub async fn start() -> Result<NoopServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EventHubServiceServer::new(Noop))
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Ok(NoopServer { addr, stop, task })
    }

    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}
