//! A connection whose server notices are kept, so a NOTICE raised anywhere
//! (even in a call that then fails and rolls back) can be checked.

use std::sync::{Arc, Mutex};

use tokio_postgres::{AsyncMessage, Client, NoTls};

/// One NOTICE (or WARNING) the server sent.
#[derive(Debug, Clone)]
pub struct Notice {
    pub message: String,
    pub hint: Option<String>,
}

/// The notices a connection has received, in order.
#[derive(Clone, Default)]
pub struct Notices(Arc<Mutex<Vec<Notice>>>);

impl Notices {
    /// Every notice received so far.
    pub fn seen(&self) -> Vec<Notice> {
        self.0.lock().unwrap().clone()
    }

    /// The notices received since the last take, removing them.
    pub fn take(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Connect to `url`, keeping every notice the server sends.
pub async fn connect_collecting(url: &str) -> (Client, Notices) {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let notices = Notices::default();
    let sink = notices.clone();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notice(n)) => sink.0.lock().unwrap().push(Notice {
                    message: n.message().to_string(),
                    hint: n.hint().map(str::to_string),
                }),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, notices)
}
