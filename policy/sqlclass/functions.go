package sqlclass

import "fmt"

// Built-in functions that do more than read, by unqualified name, with the
// class that says what. The statement that calls one gets that class as
// well as its own.
//
// How this table was reviewed: every function in pg_catalog of PostgreSQL
// 15 whose provolatile is 'v' (251, listed with SELECT proname FROM pg_proc
// WHERE oid < 16384 AND provolatile = 'v'), and the STABLE ones whose name
// did not say they only read, were considered one by one. Those not listed
// only read or only change the calling session's own state: random,
// clock_timestamp, timeofday, gen_random_uuid, pg_sleep*, currval, lastval,
// pg_sequence_last_value, lo_get, loread, lo_lseek*, lo_tell*, lo_close,
// pg_export_snapshot, pg_stat_clear_snapshot, pg_stat_force_next_flush,
// sizes (pg_*_size), lock, WAL-position, control-file, recovery and
// statistics readers, pg_partition_*, pg_collation_actual_version and the
// like; index access method, table access method, tablesample, trigger and
// language handler functions (bthandler, RI_FKey_*, plpgsql_call_handler,
// ...) cannot be called from SQL with arguments of their types. STABLE
// functions that assign a transaction ID (txid_current,
// pg_current_xact_id) are writes: the ID is WAL-logged and burnt. set_config
// is decided by its setting (classify.go). Functions of extensions (dblink,
// adminpack) are not built in: the catalog check treats them as any other
// function, and the names of the usual ones are here too.
var reviewed = map[string][]string{
	Write: {
		// Sequences, large objects, notifications, locks others see,
		// transaction IDs, WAL records, index maintenance.
		"nextval", "setval",
		"lo_creat", "lo_create", "lo_from_bytea", "lo_put", "lo_truncate", "lo_truncate64", "lo_unlink", "lowrite", "lo_open",
		"pg_notify",
		"pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared",
		"pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
		"pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
		"txid_current", "pg_current_xact_id",
		"pg_logical_emit_message",
		"brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range", "gin_clean_pending_list",
	},
	DDL: {"pg_import_system_collations", "pg_extension_config_dump"},
	// Server administration: other sessions, configuration, WAL, backups,
	// replication, statistics, pg_upgrade's hooks.
	Privilege: {
		"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_rotate_logfile_old",
		"pg_log_backend_memory_contexts", "pg_promote", "pg_wal_replay_pause", "pg_wal_replay_resume",
		"pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
		"pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_drop_replication_slot",
		"pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot", "pg_replication_slot_advance",
		"pg_logical_slot_get_changes", "pg_logical_slot_get_binary_changes",
		"pg_logical_slot_peek_changes", "pg_logical_slot_peek_binary_changes",
		"pg_replication_origin_create", "pg_replication_origin_drop", "pg_replication_origin_advance",
		"pg_replication_origin_session_setup", "pg_replication_origin_session_reset", "pg_replication_origin_xact_setup",
		"pg_replication_origin_xact_reset", "pg_replication_origin_progress", "pg_replication_origin_session_progress",
		"pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
		"pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
		"pg_stat_reset_subscription_stats",
		"pg_nextoid", "pg_stop_making_pinned_objects",
		"binary_upgrade_create_empty_extension", "binary_upgrade_set_missing_value",
		"binary_upgrade_set_next_array_pg_type_oid", "binary_upgrade_set_next_heap_pg_class_oid",
		"binary_upgrade_set_next_heap_relfilenode", "binary_upgrade_set_next_index_pg_class_oid",
		"binary_upgrade_set_next_index_relfilenode", "binary_upgrade_set_next_multirange_array_pg_type_oid",
		"binary_upgrade_set_next_multirange_pg_type_oid", "binary_upgrade_set_next_pg_authid_oid",
		"binary_upgrade_set_next_pg_enum_oid", "binary_upgrade_set_next_pg_tablespace_oid",
		"binary_upgrade_set_next_pg_type_oid", "binary_upgrade_set_next_toast_pg_class_oid",
		"binary_upgrade_set_next_toast_relfilenode", "binary_upgrade_set_record_init_privs",
	},
	// The server's files.
	ServerFile: {"pg_read_file_old", "pg_current_logfile", "pg_hba_file_rules", "pg_ident_file_mappings", "pg_show_all_file_settings"},
	// Functions that run a query given as text or fetch a cursor.
	Procedural: {"ts_rewrite", "dblink_exec", "dblink_open", "dblink_send_query", "dblink_fetch", "dblink_get_result",
		"dblink_connect", "dblink_connect_u"},
}

func init() {
	for class, names := range reviewed {
		for _, n := range names {
			functionClasses[n] = class
		}
	}
}

// Proc is a function as the catalog (pg_proc) describes it.
type Proc struct {
	Schema, Name string
	// Volatile is provolatile: 'i' immutable, 's' stable, 'v' volatile.
	Volatile byte
	Language string
	// BuiltIn: part of PostgreSQL itself (an OID below 16384,
	// FirstNormalObjectId), not of an extension or a user.
	BuiltIn bool
}

// ProcClass returns the class a call of p adds to its statement, and why
// in words for the record; "" when calling it only reads. A built-in is
// judged by the reviewed table. Any other VOLATILE function is procedural:
// PostgreSQL lets only VOLATILE functions write (non-volatile SQL and
// PL/pgSQL functions run their statements read-only), and what it does
// cannot be read from its name.
func ProcClass(p Proc) (class, why string) {
	if p.BuiltIn {
		if k, ok := functionClasses[p.Name]; ok {
			return k, fmt.Sprintf("function %s.%s is a built-in that is not a plain read", p.Schema, p.Name)
		}
		return "", ""
	}
	if p.Volatile == 'v' {
		return Procedural, fmt.Sprintf("function %s.%s is VOLATILE %s", p.Schema, p.Name, p.Language)
	}
	return "", ""
}

// WriteClasses are the classes whose statements can change the database
// or the server (all but read, transaction, session and copy; a COPY that
// writes is also write). A session whose rule allows none of them, and
// holds none for approval, is read-only.
var WriteClasses = []string{Write, UnboundedWrite, DDL, Drop, CopyProgram, ServerFile, Privilege, SetRole, Procedural, Unknown}
