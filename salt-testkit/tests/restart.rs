//! A restart closes every connection: alone in its own process, so that no other test of the
//! server sees it.

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn a_restarted_server_keeps_its_port_and_data() {
    let url = salt_testkit::postgres::database("restart");
    let server = salt_testkit::postgres::server();
    let psql = |sql: &str| {
        let out = std::process::Command::new("psql").arg(&url).args(["-Atc", sql]).output().expect("psql runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    psql("CREATE TABLE kept (x INT); INSERT INTO kept VALUES (7)");
    if server.log_file().is_none() {
        // A server given by SALT_TEST_POSTGRES is not the tests' to restart.
        return;
    }
    server.restart(std::time::Duration::from_millis(100)).unwrap();
    assert_eq!(psql("SELECT x FROM kept"), "7");
}
