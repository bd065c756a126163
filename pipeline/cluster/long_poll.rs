//! The scheduler's gRPC service with long polls: an idle executor's poll and a client's job-status poll are held until there is news.
//!
//! Ballista's executors (pull-staged) poll for tasks every 50 ms when idle, and its
//! client asks for a job's status every 50 ms; a query of a few stages waited on those
//! sleeps more than it computed. Held here (at most [`HOLD`]), an idle executor's poll
//! is answered the moment a stage becomes runnable (Ballista's `on_work_available`),
//! and a job-status poll the moment the job ends. Everything else is Ballista's service
//! unchanged.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::serde::protobuf::executor_resource::Resource;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpc;
use ballista_core::serde::protobuf::{
    CancelJobParams, CancelJobResult, CleanJobDataParams, CleanJobDataResult, CreateUpdateSessionParams,
    CreateUpdateSessionResult, ExecuteQueryParams, ExecuteQueryResult, ExecutorStoppedParams, ExecutorStoppedResult,
    GetJobMetricsParams, GetJobMetricsResult, GetJobStatusParams, GetJobStatusResult, HeartBeatParams, HeartBeatResult,
    PollWorkParams, PollWorkResult, RegisterExecutorParams, RegisterExecutorResult, RemoveSessionParams,
    RemoveSessionResult, UpdateTaskStatusParams, UpdateTaskStatusResult, job_status,
};
use ballista_scheduler::config::OnWorkAvailableFn;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// The longest a poll is held: well inside an executor's heartbeat and every client timeout.
pub const HOLD: Duration = Duration::from_millis(500);
/// A held executor poll asks again this often even without a wake-up (tasks reset after a
/// lost executor come back without one).
const WORK_RECHECK: Duration = Duration::from_millis(25);
/// A held job-status poll looks again this often: a read of the job's state, in memory.
const STATUS_RECHECK: Duration = Duration::from_millis(2);

/// Ballista's scheduler service `S`, with its executors' and clients' polls held until there is news.
pub struct LongPoll<S> {
    inner: S,
    work: Arc<Notify>,
}

impl<S> LongPoll<S> {
    /// `work` is woken by [`on_work_available`] of the same scheduler's config.
    pub fn new(inner: S, work: Arc<Notify>) -> Self {
        Self { inner, work }
    }
}

/// The scheduler's `on_work_available` callback: wakes every held executor poll.
pub fn on_work_available(work: Arc<Notify>) -> OnWorkAvailableFn {
    Arc::new(move |_| work.notify_waiters())
}

/// Free slots the poll reports equal the executor's slots: it runs nothing, so holding its
/// poll delays no task report (a busy executor's finished tasks travel with its next poll,
/// while this one's travel with the first ask).
fn idle(params: &PollWorkParams) -> bool {
    let slots: u32 = params
        .metadata
        .as_ref()
        .and_then(|m| m.specification.as_ref())
        .map(|s| s.resources.iter().filter_map(|r| r.resource).map(|Resource::Vcores(n)| n).sum())
        .unwrap_or(0);
    slots > 0 && params.num_free_vcores == slots
}

/// The poll asked again: its task reports are already taken, and an executor that left its
/// host to the scheduler is named by the address it polled from, as on the first ask.
fn asked_again(params: &PollWorkParams, remote: Option<SocketAddr>) -> PollWorkParams {
    let mut again = PollWorkParams { task_status: Vec::new(), ..params.clone() };
    if let (Some(metadata), Some(remote)) = (again.metadata.as_mut(), remote) {
        metadata.host.get_or_insert_with(|| remote.ip().to_string());
    }
    again
}

fn settled(answer: &GetJobStatusResult) -> bool {
    matches!(
        answer.status.as_ref().and_then(|s| s.status.as_ref()),
        Some(job_status::Status::Successful(_) | job_status::Status::Failed(_))
    )
}

#[tonic::async_trait]
impl<S: SchedulerGrpc> SchedulerGrpc for LongPoll<S> {
    type ExecuteQueryPushStream = S::ExecuteQueryPushStream;

    async fn poll_work(&self, request: Request<PollWorkParams>) -> Result<Response<PollWorkResult>, Status> {
        let deadline = Instant::now() + HOLD;
        let remote = request.remote_addr();
        let again = idle(request.get_ref()).then(|| asked_again(request.get_ref(), remote));
        // Listening before asking: a wake-up between the answer and the wait is not lost.
        let mut woken = pin!(self.work.notified());
        woken.as_mut().enable();
        let mut answer = self.inner.poll_work(request).await?;
        let Some(again) = again else { return Ok(answer) };
        while answer.get_ref().tasks.is_empty() && answer.get_ref().jobs_to_clean.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::select! {
                () = woken.as_mut() => {}
                () = tokio::time::sleep(WORK_RECHECK.min(deadline - now)) => {}
            }
            woken.set(self.work.notified());
            woken.as_mut().enable();
            answer = self.inner.poll_work(Request::new(again.clone())).await?;
        }
        Ok(answer)
    }

    async fn get_job_status(
        &self,
        request: Request<GetJobStatusParams>,
    ) -> Result<Response<GetJobStatusResult>, Status> {
        let deadline = Instant::now() + HOLD;
        let params = request.get_ref().clone();
        let mut answer = self.inner.get_job_status(request).await?;
        while !settled(answer.get_ref()) && Instant::now() < deadline {
            tokio::time::sleep(STATUS_RECHECK).await;
            answer = self.inner.get_job_status(Request::new(params.clone())).await?;
        }
        Ok(answer)
    }

    async fn register_executor(
        &self,
        request: Request<RegisterExecutorParams>,
    ) -> Result<Response<RegisterExecutorResult>, Status> {
        self.inner.register_executor(request).await
    }

    async fn heart_beat_from_executor(
        &self,
        request: Request<HeartBeatParams>,
    ) -> Result<Response<HeartBeatResult>, Status> {
        self.inner.heart_beat_from_executor(request).await
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusParams>,
    ) -> Result<Response<UpdateTaskStatusResult>, Status> {
        self.inner.update_task_status(request).await
    }

    async fn create_update_session(
        &self,
        request: Request<CreateUpdateSessionParams>,
    ) -> Result<Response<CreateUpdateSessionResult>, Status> {
        self.inner.create_update_session(request).await
    }

    async fn remove_session(
        &self,
        request: Request<RemoveSessionParams>,
    ) -> Result<Response<RemoveSessionResult>, Status> {
        self.inner.remove_session(request).await
    }

    async fn execute_query_push(
        &self,
        request: Request<ExecuteQueryParams>,
    ) -> Result<Response<Self::ExecuteQueryPushStream>, Status> {
        self.inner.execute_query_push(request).await
    }

    async fn execute_query(
        &self,
        request: Request<ExecuteQueryParams>,
    ) -> Result<Response<ExecuteQueryResult>, Status> {
        self.inner.execute_query(request).await
    }

    async fn get_job_metrics(
        &self,
        request: Request<GetJobMetricsParams>,
    ) -> Result<Response<GetJobMetricsResult>, Status> {
        self.inner.get_job_metrics(request).await
    }

    async fn executor_stopped(
        &self,
        request: Request<ExecutorStoppedParams>,
    ) -> Result<Response<ExecutorStoppedResult>, Status> {
        self.inner.executor_stopped(request).await
    }

    async fn cancel_job(&self, request: Request<CancelJobParams>) -> Result<Response<CancelJobResult>, Status> {
        self.inner.cancel_job(request).await
    }

    async fn clean_job_data(
        &self,
        request: Request<CleanJobDataParams>,
    ) -> Result<Response<CleanJobDataResult>, Status> {
        self.inner.clean_job_data(request).await
    }
}

#[cfg(test)]
mod tests {
    use ballista_core::serde::protobuf::{ExecutorRegistration, ExecutorResource, ExecutorSpecification, TaskStatus};

    use super::*;

    fn poll(slots: u32, free: u32, reports: usize, host: Option<&str>) -> PollWorkParams {
        PollWorkParams {
            metadata: Some(ExecutorRegistration {
                id: "e1".into(),
                host: host.map(str::to_owned),
                specification: Some(ExecutorSpecification {
                    resources: vec![ExecutorResource { resource: Some(Resource::Vcores(slots)) }],
                }),
                ..Default::default()
            }),
            num_free_vcores: free,
            task_status: vec![TaskStatus::default(); reports],
        }
    }

    #[test]
    fn only_an_executor_running_nothing_is_held() {
        assert!(idle(&poll(2, 2, 0, None)));
        assert!(!idle(&poll(2, 1, 0, None)), "one task running: its report would wait");
        assert!(idle(&poll(1, 1, 1, None)), "its last report is taken by the first ask");
        assert!(!idle(&poll(0, 0, 0, None)));
    }

    #[test]
    fn asked_again_without_reports_and_named_as_before() {
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let again = asked_again(&poll(1, 1, 0, None), Some(remote));
        assert!(again.task_status.is_empty());
        assert_eq!(again.metadata.unwrap().host.as_deref(), Some("10.1.2.3"));
        let named = asked_again(&poll(1, 1, 0, Some("exec-a")), Some(remote));
        assert_eq!(named.metadata.unwrap().host.as_deref(), Some("exec-a"));
    }

    #[tokio::test]
    async fn a_held_poll_wakes_at_once_and_a_wake_up_before_the_wait_is_kept() {
        let work = Arc::new(Notify::new());
        let mut woken = pin!(work.notified());
        woken.as_mut().enable();
        on_work_available(Arc::clone(&work))(ballista_scheduler::config::WorkAvailableReason::JobSubmitted {
            job_id: "j".to_string().into(),
        });
        tokio::time::timeout(Duration::from_millis(100), woken).await.expect("the wake-up was lost");
    }
}
