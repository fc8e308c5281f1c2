//! A token login lost under the agent's feet, as on a Nitrokey through OpenSC: any other
//! program opening the card resets its PIN state, and the next share read fails.
//!
//! SoftHSM never loses a login by itself, and another *process* cannot touch this process's
//! login on it (each process has its own SoftHSM state), so `pkcs11-tool -L` beside the
//! agent would prove nothing here. What does drop a login on SoftHSM, as OpenSC does, is
//! `C_Logout` on a second session of the same token in the same process: login state is
//! per application and token, so it logs every session out. The library is driven
//! directly, in a child process of this test binary with its own SoftHSM configuration
//! (the module's state is per process, and the environment must not be changed in this one).

use crate::harness::{Env, PIN, SOFTHSM_MODULE};
use nkpki::hsm::{HsmError, Module, TokenSelector};
use secrecy::SecretString;

const CHILD_ENV: &str = "NKPKI_TEST_LOST_LOGIN_CA";

#[test]
fn a_lost_token_login_is_recovered_once() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let h = env.packaged_ceremony(3, 2);
    env.deploy(&h[0], "ca/packages/NK001.nkpkg", "NK001", &[])
        .ok();
    let manifest: serde_json::Value =
        serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    let ca_id = manifest["signed"]["ca_id"].as_str().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "token_login::lost_login_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("SOFTHSM2_CONF", env.path("softhsm2.conf"))
        .env(CHILD_ENV, ca_id)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the child did not run: {text}");
    assert!(text.contains("child: every step held"), "{text}");
}

#[test]
#[ignore = "run by a_lost_token_login_is_recovered_once, in a process of its own"]
fn lost_login_child() {
    let Ok(ca_id) = std::env::var(CHILD_ENV) else {
        return;
    };
    let module = Module::load(Some(std::path::Path::new(SOFTHSM_MODULE))).unwrap();
    let selector = TokenSelector::parse("NK001").unwrap();
    let agent = module.open(&selector).unwrap();
    // stands for "another program opened the card"
    let intruder = module.open(&selector).unwrap();
    let pin = SecretString::from(PIN);

    // what the agent did before: log in once, keep the login, read later
    agent.login(&pin).unwrap();
    intruder.logout().unwrap();
    let lost = agent.read_share(&ca_id).unwrap_err();
    assert!(lost.may_be_lost_login(), "{lost}");

    // a fresh login before each read: no loss to recover from
    let share = agent
        .with_fresh_login(
            &pin,
            |t| t.read_share(&ca_id),
            |e| panic!("no lost login expected: {e}"),
        )
        .unwrap();
    assert!(!share.is_empty());

    // the login lost between the fresh login and the read: logged once, read again
    let mut calls = 0;
    let mut reported = Vec::new();
    let share = agent
        .with_fresh_login(
            &pin,
            |t| {
                calls += 1;
                if calls == 1 {
                    intruder.logout()?;
                }
                t.read_share(&ca_id)
            },
            |e| reported.push(e.to_string()),
        )
        .unwrap();
    assert!(!share.is_empty());
    assert_eq!((calls, reported.len()), (2, 1), "{reported:?}");

    // lost again and again: one retry only, then the error
    let mut calls = 0;
    let e = agent
        .with_fresh_login(
            &pin,
            |t| {
                calls += 1;
                intruder.logout()?;
                t.read_share(&ca_id)
            },
            |_| {},
        )
        .unwrap_err();
    assert_eq!(calls, 2);
    assert!(matches!(e, HsmError::NoShare { .. }), "{e}");

    // other errors are not retried
    let mut calls = 0;
    let e = agent.with_fresh_login(
        &pin,
        |t| {
            calls += 1;
            t.holder_key()
                .and(Err::<(), _>(HsmError::NoPin("not a login error".into())))
        },
        |_| panic!("not a lost login"),
    );
    assert!(e.is_err());
    assert_eq!(calls, 1);
    println!("child: every step held");
}
