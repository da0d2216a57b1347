//! The request loop of the in-process router benches (`router`,
//! `sliding_expiry`): a `GET /` driven through `tower::ServiceExt::oneshot`,
//! no sockets.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Benches `GET /` on `app` with this `authorization` header, as `name` in
/// `group`; every response must be 200.
pub fn bench_get(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    runtime: &Runtime,
    app: &Router,
    authorization: &str,
) {
    group.bench_function(name, |b| {
        b.to_async(runtime).iter(|| {
            let request = Request::get("/")
                .header("authorization", authorization)
                .body(Body::empty())
                .unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response
            }
        })
    });
}
