//! Services shared by the integration tests: one method per argument and
//! return shape a user relies on.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: i32,
    pub y: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    Circle { center: Point, radius: f64 },
    Polygon(Vec<Point>),
    Empty,
}

/// A service exercising every shape of argument and reply.
#[malla::service(global, vsn = "1.0.0")]
pub trait Geometry {
    /// No arguments, no reply.
    async fn ping(&self);
    async fn add(&self, a: i64, b: i64) -> i64;
    async fn translate(&self, p: Point, dx: i32, dy: i32) -> Point;
    async fn area(&self, shape: Shape) -> f64;
    async fn centroid(&self, points: Vec<Point>) -> Option<Point>;
    async fn parse(&self, text: String) -> Result<i64, String>;
    async fn classify(&self, sides: u32) -> Shape;
    async fn histogram(&self, words: Vec<String>) -> BTreeMap<String, u32>;
    async fn totals(&self, groups: HashMap<String, Vec<i32>>) -> BTreeMap<String, i32>;
    #[allow(clippy::too_many_arguments)]
    async fn scalars(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i8,
        f: bool,
        g: char,
        h: (u8, String),
        i: [u8; 4],
        j: Option<()>,
    ) -> String;
    /// Counts calls on this instance.
    #[malla(idempotent)]
    async fn count(&self) -> u64;
    async fn boom(&self, message: String) -> u8;
    #[malla(timeout_ms = 50)]
    async fn sleep_ms(&self, ms: u64) -> u64;
    /// A default body: implementors may leave it out.
    async fn hello(&self, name: String) -> String {
        format!("hello {name}")
    }
}

/// The reference implementation.
#[derive(Default)]
pub struct Geo {
    pub calls: AtomicU64,
}

impl Geometry for Geo {
    async fn ping(&self) {}

    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn translate(&self, p: Point, dx: i32, dy: i32) -> Point {
        Point {
            x: p.x + dx,
            y: p.y + dy,
        }
    }

    async fn area(&self, shape: Shape) -> f64 {
        match shape {
            Shape::Circle { radius, .. } => 3.0 * radius * radius,
            Shape::Polygon(points) => points.len() as f64,
            Shape::Empty => 0.0,
        }
    }

    async fn centroid(&self, points: Vec<Point>) -> Option<Point> {
        let n = points.len() as i32;
        (n > 0).then(|| Point {
            x: points.iter().map(|p| p.x).sum::<i32>() / n,
            y: points.iter().map(|p| p.y).sum::<i32>() / n,
        })
    }

    async fn parse(&self, text: String) -> Result<i64, String> {
        text.trim().parse().map_err(|e| format!("{text:?}: {e}"))
    }

    async fn classify(&self, sides: u32) -> Shape {
        match sides {
            0 => Shape::Empty,
            1 => Shape::Circle {
                center: Point { x: 0, y: 0 },
                radius: 1.5,
            },
            n => Shape::Polygon((0..n as i32).map(|i| Point { x: i, y: -i }).collect()),
        }
    }

    async fn histogram(&self, words: Vec<String>) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for w in words {
            *out.entry(w).or_default() += 1;
        }
        out
    }

    async fn totals(&self, groups: HashMap<String, Vec<i32>>) -> BTreeMap<String, i32> {
        groups.into_iter().map(|(k, v)| (k, v.iter().sum())).collect()
    }

    async fn scalars(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i8,
        f: bool,
        g: char,
        h: (u8, String),
        i: [u8; 4],
        j: Option<()>,
    ) -> String {
        format!("{a} {b} {c} {d} {e} {f} {g} {h:?} {i:?} {j:?}")
    }

    async fn count(&self) -> u64 {
        self.calls.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn boom(&self, message: String) -> u8 {
        panic!("{message}")
    }

    async fn sleep_ms(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// Declared in this binary but served nowhere: a stub.
#[malla::service(global)]
pub trait Unserved {
    async fn add(&self, a: i64, b: i64) -> i64;
}

/// Calls every method of `Geometry` through `client` and checks each answer.
pub async fn exercise_every_shape(client: &GeometryClient) {
    client.ping().await.unwrap();
    assert_eq!(client.add(2, 40).await.unwrap(), 42);
    assert_eq!(
        client.translate(Point { x: 1, y: 2 }, 10, -20).await.unwrap(),
        Point { x: 11, y: -18 }
    );
    let circle = Shape::Circle {
        center: Point { x: 1, y: 1 },
        radius: 2.0,
    };
    assert_eq!(client.area(circle).await.unwrap(), 12.0);
    assert_eq!(client.area(Shape::Empty).await.unwrap(), 0.0);
    assert_eq!(
        client
            .centroid(vec![Point { x: 0, y: 0 }, Point { x: 4, y: 2 }])
            .await
            .unwrap(),
        Some(Point { x: 2, y: 1 })
    );
    assert_eq!(client.centroid(vec![]).await.unwrap(), None);
    assert_eq!(client.parse(" 17 ".into()).await.unwrap(), Ok(17));
    assert!(
        client
            .parse("x".into())
            .await
            .unwrap()
            .unwrap_err()
            .contains("invalid digit")
    );
    assert_eq!(client.classify(0).await.unwrap(), Shape::Empty);
    assert_eq!(
        client.classify(3).await.unwrap(),
        Shape::Polygon(vec![Point { x: 0, y: 0 }, Point { x: 1, y: -1 }, Point { x: 2, y: -2 }])
    );
    let words = ["a", "b", "a"].map(String::from).to_vec();
    assert_eq!(
        client.histogram(words).await.unwrap(),
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
    );
    let groups = HashMap::from([("x".to_string(), vec![1, 2, 3]), ("y".to_string(), vec![])]);
    assert_eq!(
        client.totals(groups).await.unwrap(),
        BTreeMap::from([("x".to_string(), 6), ("y".to_string(), 0)])
    );
    assert_eq!(
        client
            .scalars(1, 2, 3, 4, -5, true, 'é', (6, "seven".into()), [8, 9, 10, 11], Some(()))
            .await
            .unwrap(),
        "1 2 3 4 -5 true é (6, \"seven\") [8, 9, 10, 11] Some(())"
    );
    assert_eq!(client.hello("malla".into()).await.unwrap(), "hello malla");
}
