package postgres

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/policy"
)

// columnNames resolves result columns (RowDescription table OID and
// attribute number) to their real table and column names, so column masks
// hold when a query renames a column. Lookups go over a side connection
// with the target's credentials and are cached per target. It is safe for
// concurrent use; mu guards cache.
type columnNames struct {
	mu    sync.Mutex
	cache map[string]*nameCache // target \x00 database
}

// nameCache holds the names of one database's columns for up to
// namesTTL: a column renamed since is seen under its new name by then.
type nameCache struct {
	at    time.Time
	names map[[2]uint32]colName // (table oid, attnum) -> name
}

const namesTTL = 30 * time.Second

// resolve returns names parallel to fields. A failure leaves names empty,
// which makes table-qualified masks apply to the column name alone (more,
// never less).
func (c *columnNames) resolve(ctx context.Context, t *policy.Target, addr string, params map[string]string, fields []pgproto3.FieldDescription) []colName {
	out := make([]colName, len(fields))
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]*nameCache{}
	}
	// OIDs are per database: the cache is too.
	db := params["database"]
	if db == "" {
		db = params["user"]
	}
	key := t.Name + "\x00" + db
	nc := c.cache[key]
	if nc == nil || time.Since(nc.at) > namesTTL {
		nc = &nameCache{at: time.Now(), names: map[[2]uint32]colName{}}
		c.cache[key] = nc
	}
	known := nc.names
	var missing []uint32
	for i, f := range fields {
		if f.TableOID == 0 {
			continue
		}
		if n, ok := known[[2]uint32{f.TableOID, uint32(f.TableAttributeNumber)}]; ok {
			out[i] = n
		} else {
			missing = append(missing, f.TableOID)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out
	}
	found, err := lookupColumns(ctx, t, addr, params, missing)
	if err != nil {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range found {
		known[k] = v
	}
	for i, f := range fields {
		if n, ok := known[[2]uint32{f.TableOID, uint32(f.TableAttributeNumber)}]; ok {
			out[i] = n
		}
	}
	return out
}

func lookupColumns(ctx context.Context, t *policy.Target, addr string, params map[string]string, oids []uint32) (map[[2]uint32]colName, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The same database as the session: OIDs are per database.
	cfg, err := upstreamConfig(t, addr, params)
	if err != nil {
		return nil, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	list := make([]string, len(oids))
	for i, o := range oids {
		list[i] = strconv.FormatUint(uint64(o), 10)
	}
	rr := conn.ExecParams(ctx, `SELECT a.attrelid, a.attnum, c.relname, a.attname FROM pg_catalog.pg_attribute a
		JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0`,
		[][]byte{[]byte("{" + strings.Join(list, ",") + "}")}, nil, nil, nil)
	res := rr.Read()
	if res.Err != nil {
		return nil, res.Err
	}
	out := map[[2]uint32]colName{}
	for _, row := range res.Rows {
		oid, _ := strconv.ParseUint(string(row[0]), 10, 32)
		num, _ := strconv.ParseUint(string(row[1]), 10, 32)
		out[[2]uint32{uint32(oid), uint32(num)}] = colName{table: string(row[2]), column: string(row[3])}
	}
	return out, nil
}
