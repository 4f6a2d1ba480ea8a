// userservice is the demo target: a tiny "service" whose Store.GetUser queries a database
// (an in-memory table here) and whose request loop logs every answer once a second.
// The demo injects `nil, error:db is down` into the running process and takes it out again.
//
// With -http ADDR it also answers GET /users/{id} over HTTP (200 with the user, 404 when there
// is none, 500 with the error text when the query fails): the Chaos Toolkit example probes it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type User struct {
	ID   int
	Name string
}

type Store struct {
	table map[int]User
}

var ErrNotFound = errors.New("user not found")

// GetUser is the database query the chaos experiment targets.
//
//go:noinline
func (s *Store) GetUser(id int) (*User, error) {
	u, ok := s.table[id]
	if !ok {
		return nil, ErrNotFound
	}
	return &u, nil
}

// serveUsers answers GET /users/{id} from the store.
func serveUsers(store *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/users/"))
		if err != nil || r.Method != http.MethodGet {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		u, err := store.GetUser(id)
		switch {
		case errors.Is(err, ErrNotFound):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(u)
		}
	}
}

func main() {
	addr := flag.String("http", "", "also answer GET /users/{id} on this address (e.g. 127.0.0.1:8080)")
	flag.Parse()
	store := &Store{table: map[int]User{1: {1, "alice"}, 2: {2, "bob"}}}
	fmt.Printf("userservice pid %d serving\n", os.Getpid())
	if *addr != "" {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening on http://%s\n", ln.Addr())
		go http.Serve(ln, serveUsers(store))
	}
	for i := 0; ; i++ {
		id := 1 + i%2
		u, err := store.GetUser(id)
		if err != nil {
			fmt.Printf("GET /users/%d -> 500 %v\n", id, err)
		} else {
			fmt.Printf("GET /users/%d -> 200 %s\n", id, u.Name)
		}
		time.Sleep(time.Second)
	}
}
