//! WebAssembly components written in WAT, for the host's tests and
//! benchmarks: no guest toolchain needed. Included by path from the
//! benchmark, so everything here is used by one or the other.
#![allow(dead_code)]

/// A component of the `fogbank:service` world whose entry points run the
/// given core instructions. It imports `outputs.publish` as `$publish`
/// (params: output ptr, len, value case, payload i64, payload i32, return
/// area), `log.log` as `$log` (level, ptr, len) and `things.read-latest`
/// as `$read_latest` (id ptr, len, return area). Memory from 1024 up is
/// free for the bodies; the text "out" is at 16, "hello" at 32, "allowed"
/// at 48, "refused" at 64 and the thing id "gw.sim.t1.temperature" at 80.
pub fn component(init: &str, on_reading: &str, on_timer: &str) -> String {
    format!(
        r#"(component
  (type $value (variant (case "number" float64) (case "text" string) (case "boolean" bool)))
  (type $failure (variant (case "denied" string) (case "not-found" string) (case "invalid" string) (case "unavailable" string) (case "limit" string)))
  (import "fogbank:service/outputs@0.1.0" (instance $outputs
    (export "value" (type $v (eq $value)))
    (export "failure" (type $f (eq $failure)))
    (export "publish" (func (param "output" string) (param "value" $v) (result (result (error $f)))))))
  (type $level (enum "debug" "info" "warn" "error"))
  (import "fogbank:service/log@0.1.0" (instance $log
    (export "level" (type $level' (eq $level)))
    (export "log" (func (param "level" $level') (param "message" string)))))
  (import "fogbank:service/things@0.1.0" (instance $things
    (export "value" (type $tv (eq $value)))
    (type $treading (record (field "value" $tv) (field "time" u64)))
    (export "reading" (type $tr (eq $treading)))
    (export "failure" (type $tf (eq $failure)))
    (export "read-latest" (func (param "id" string) (result (result (option $tr) (error $tf)))))))
  (alias export $outputs "publish" (func $publish))
  (alias export $log "log" (func $log))
  (alias export $things "read-latest" (func $read_latest))
  (core module $libc
    (memory (export "memory") 1)
    (global $bump (mut i32) (i32.const 8192))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      ;; Arguments live only during a call: start again near the end.
      (if (i32.gt_u (i32.add (global.get $bump) (local.get 3)) (i32.const 60000))
        (then (global.set $bump (i32.const 8192))))
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p)))
  (core instance $libc (instantiate $libc))
  (core func $publish_lowered (canon lower (func $publish) (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (core func $log_lowered (canon lower (func $log) (memory (core memory $libc "memory"))))
  (core func $read_latest_lowered (canon lower (func $read_latest) (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "host" "publish" (func $publish (param i32 i32 i32 i64 i32 i32)))
    (import "host" "log" (func $log (param i32 i32 i32)))
    (import "host" "read-latest" (func $read_latest (param i32 i32 i32)))
    (data (i32.const 16) "out")
    (data (i32.const 32) "hello")
    (data (i32.const 48) "allowed")
    (data (i32.const 64) "refused")
    (data (i32.const 80) "gw.sim.t1.temperature")
    (func (export "init") (param i32 i32) (result i32)
      {init}
      (i32.store8 (i32.const 1000) (i32.const 0))
      (i32.const 1000))
    (func (export "on-reading") (param i32 i32 i32 i64 i32 i64)
      {on_reading})
    (func (export "on-timer")
      {on_timer})
    (func (export "on-request") (param i32 i32 i32 i32 i32 i32) (result i32)
      (i32.store16 (i32.const 1100) (i32.const 200))
      (i32.store (i32.const 1104) (i32.const 32))
      (i32.store (i32.const 1108) (i32.const 5))
      (i32.store (i32.const 1112) (local.get 4))
      (i32.store (i32.const 1116) (local.get 5))
      (i32.const 1100)))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance (export "publish" (func $publish_lowered)) (export "log" (func $log_lowered)) (export "read-latest" (func $read_latest_lowered))))))
  (export $value' "value" (type $value))
  (type $reading (record (field "value" $value') (field "time" u64)))
  (type $response (record (field "status" u16) (field "content-type" string) (field "body" (list u8))))
  (export $reading' "reading" (type $reading))
  (export $response' "response" (type $response))
  (func (export "init") (param "config" string) (result (result (error string)))
    (canon lift (core func $main "init") (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (func (export "on-reading") (param "thing-id" string) (param "reading" $reading')
    (canon lift (core func $main "on-reading") (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (func (export "on-timer")
    (canon lift (core func $main "on-timer")))
  (func (export "on-request") (param "method" string) (param "path" string) (param "body" (list u8)) (result $response')
    (canon lift (core func $main "on-request") (memory (core memory $libc "memory")) (realloc (core func $libc "realloc")))))"#
    )
}

/// Publishes the number `n` (an f64 in a local) on output "out".
pub const PUBLISH_READING_VALUE: &str = "(call $publish (i32.const 16) (i32.const 3) (i32.const 0) (local.get 3) (i32.const 0) (i32.const 2000))";
pub const LOG_HELLO: &str = "(call $log (i32.const 1) (i32.const 32) (i32.const 5))";
pub const SPIN: &str = "(loop $forever (br $forever))";
pub const TRAP: &str = "unreachable";
pub const GROW_FOREVER: &str =
    "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable";
pub const PUBLISH_FOREVER: &str = "(loop $more
    (call $publish (i32.const 16) (i32.const 3) (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 2000))
    (br $more))";
/// Logs "hello" a thousand times in one call.
pub const LOG_FLOOD: &str = "(i32.store (i32.const 1200) (i32.const 0))
    (loop $more
      (call $log (i32.const 1) (i32.const 32) (i32.const 5))
      (i32.store (i32.const 1200) (i32.add (i32.load (i32.const 1200)) (i32.const 1)))
      (br_if $more (i32.lt_u (i32.load (i32.const 1200)) (i32.const 1000))))";

/// Reads the latest reading of "gw.sim.t1.temperature" and logs "allowed",
/// "refused" if the host answered `failure::denied`, "hello" for any
/// other failure. (The result's case is the byte at 3000, the failure's at
/// 3008, after the 8-byte alignment of a reading.)
pub const READ_SENSOR: &str = "(call $read_latest (i32.const 80) (i32.const 21) (i32.const 3000))
    (if (i32.eqz (i32.load8_u (i32.const 3000)))
      (then (call $log (i32.const 1) (i32.const 48) (i32.const 7)))
      (else (if (i32.eqz (i32.load8_u (i32.const 3008)))
        (then (call $log (i32.const 1) (i32.const 64) (i32.const 7)))
        (else (call $log (i32.const 1) (i32.const 32) (i32.const 5))))))";

/// `component` holding `extra` more core module instances (of an empty
/// module), as a language runtime linked from many modules does.
pub fn with_core_instances(component: &str, extra: usize) -> String {
    let marker = "(core instance $libc (instantiate $libc))";
    let more =
        "(core module $empty) ".to_owned() + &"(core instance (instantiate $empty)) ".repeat(extra);
    component.replacen(marker, &format!("{marker} {more}"), 1)
}
