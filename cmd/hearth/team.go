package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearthsh/hearth/internal/cp"
	"github.com/hearthsh/hearth/internal/store"
)

// The team and key commands work on the control plane's database directly (the same
// --data-dir or --database-url as `hearth server`): they are the operator's, who has the
// database, not an API caller's. A key revoked here stops working on every replica within
// the control plane's key cache lifetime (seconds); `DELETE /api-keys/{id}` through a
// replica stops it there at once.

// storeFlags names the control plane's database.
type storeFlags struct {
	dataDir, databaseURL string
	json                 bool
}

func (f *storeFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", templateEnvOr("HEARTH_DATA_DIR", templateDefaultDataDir), "data directory of the control plane (its SQLite database)")
	fs.StringVar(&f.databaseURL, "database-url", os.Getenv("HEARTH_DATABASE_URL"), "PostgreSQL URL of the control plane ($HEARTH_DATABASE_URL)")
	fs.BoolVar(&f.json, "json", false, "print JSON")
}

func (f *storeFlags) open(cmd *cobra.Command) (store.Store, error) {
	return openStore(cmd.Context(), serverConfig{DataDir: f.dataDir, DatabaseURL: f.databaseURL})
}

func init() { rootCmd.AddCommand(newTeamCmd(), newKeyCmd()) }

func newTeamCmd() *cobra.Command {
	team := &cobra.Command{Use: "team", Short: "Create and list teams (on the control plane's database)"}
	team.AddCommand(newTeamCreateCmd(), newTeamLsCmd())
	return team
}

func newKeyCmd() *cobra.Command {
	key := &cobra.Command{Use: "key", Short: "Create, list and revoke teams' API keys (on the control plane's database)"}
	key.AddCommand(newKeyCreateCmd(), newKeyLsCmd(), newKeyRevokeCmd())
	return key
}

func newTeamID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "team_" + hex.EncodeToString(b)
}

// createdKey is what `team create` and `key create` print: the key is shown only once.
type createdKey struct {
	TeamID   string `json:"teamID"`
	TeamName string `json:"teamName"`
	KeyID    string `json:"keyID"`
	Key      string `json:"key"`
}

func printCreatedKey(cmd *cobra.Command, asJSON bool, k createdKey) error {
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), k)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "team %s (%s)\nAPI key %s (shown once; store it now):\n%s\n", k.TeamName, k.TeamID, k.KeyID, k.Key)
	return nil
}

// addKey makes a new key in team and returns it.
func addKey(cmd *cobra.Command, st store.Store, team store.Team, name string) (createdKey, error) {
	key := cp.NewAPIKey()
	if err := cp.RegisterKey(cmd.Context(), st, key, name, team.ID); err != nil {
		return createdKey{}, fmt.Errorf("create API key in team %s: %w", team.Name, err)
	}
	return createdKey{TeamID: team.ID, TeamName: team.Name, KeyID: cp.HashKey(key)[:16], Key: key}, nil
}

func newTeamCreateCmd() *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team and its first API key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if len(name) > 100 {
				return errors.New("team name: at most 100 characters")
			}
			st, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			t := store.Team{ID: newTeamID(), Name: name, CreatedAt: time.Now().UTC()}
			if err := st.CreateTeam(cmd.Context(), t); err != nil {
				if errors.Is(err, store.ErrConflict) {
					return fmt.Errorf("a team named %q exists: pick another name, or add a key to it with `hearth key create --team %s`", name, name)
				}
				return err
			}
			k, err := addKey(cmd, st, t, "created with the team")
			if err != nil {
				return err
			}
			return printCreatedKey(cmd, f.json, k)
		},
	}
	f.register(cmd)
	return cmd
}

func newTeamLsCmd() *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List teams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			teams, err := st.ListTeams(cmd.Context())
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), teams)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tCREATED")
			for _, t := range teams {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Name, shownTime(t.CreatedAt))
			}
			return tw.Flush()
		},
	}
	f.register(cmd)
	return cmd
}

func shownTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

func newKeyCreateCmd() *cobra.Command {
	var (
		f          storeFlags
		team, name string
	)
	cmd := &cobra.Command{
		Use:   "create --team TEAM",
		Short: "Create an API key in a team (by name or ID) and print it once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if team == "" {
				return errors.New("--team is required: the team (name or ID) the key acts for; `hearth team ls` lists them")
			}
			st, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			t, err := st.Team(cmd.Context(), team)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no team %q: `hearth team ls` lists them, `hearth team create` makes one", team)
			} else if err != nil {
				return err
			}
			k, err := addKey(cmd, st, t, name)
			if err != nil {
				return err
			}
			return printCreatedKey(cmd, f.json, k)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&team, "team", "", "team name or ID (required)")
	cmd.Flags().StringVar(&name, "name", "created with hearth key create", "what the key is for, shown in lists")
	return cmd
}

func newKeyLsCmd() *cobra.Command {
	var (
		f    storeFlags
		team string
	)
	cmd := &cobra.Command{
		Use:   "ls [--team TEAM]",
		Short: "List API keys (masked), of one team or all",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			teamID := ""
			if team != "" {
				t, err := st.Team(cmd.Context(), team)
				if err != nil {
					return fmt.Errorf("team %q: %w", team, err)
				}
				teamID = t.ID
			}
			keys, err := st.ListAPIKeys(cmd.Context(), teamID)
			if err != nil {
				return err
			}
			if f.json {
				return writeJSON(cmd.OutOrStdout(), keys)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTEAM\tKEY\tNAME\tCREATED\tLAST USED")
			for _, k := range keys {
				last := "never"
				if k.LastUsedAt != nil {
					last = shownTime(*k.LastUsedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.TeamID, k.Mask, k.Name, shownTime(k.CreatedAt), last)
			}
			return tw.Flush()
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&team, "team", "", "only this team's keys (name or ID)")
	return cmd
}

func newKeyRevokeCmd() *cobra.Command {
	var f storeFlags
	cmd := &cobra.Command{
		Use:   "revoke KEY-ID",
		Short: "Revoke an API key (its ID from `hearth key ls`)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.DeleteAPIKey(cmd.Context(), args[0]); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					return fmt.Errorf("no API key with ID %s: `hearth key ls` lists them", args[0])
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s: control plane replicas refuse it within seconds\n", args[0])
			return nil
		},
	}
	f.register(cmd)
	return cmd
}
