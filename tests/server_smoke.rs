//! The binary starts, answers, and exits cleanly on SIGTERM.
mod util;

use std::time::Duration;
use util::{Resp, TimewheelServer};

#[test]
fn starts_answers_and_stops_on_sigterm() {
    let mut server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["PING"]), Resp::simple("PONG"));
    assert!(server.log().contains("memory only"));
    let status = server
        .terminate(Duration::from_secs(5))
        .expect("exit within 5 s");
    assert!(status.success(), "{status:?}");
}
