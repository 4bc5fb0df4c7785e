package envspec

import (
	"archive/tar"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

func good() Spec {
	return Spec{OwnerID: "alice", Name: "data", BaseImage: "stacyvm/debian:test",
		AptPackages: []string{"jq"}, PythonPackages: []string{"requests==2.31.0"}}
}

func TestAptPackages(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"jq", true},
		{"libc6", true},
		{"g++", true},
		{"python3.11", true},
		{"ffmpeg=7:5.1.4-0+deb12u1", true},
		{"jq=1.6-2.1", true},
		{"foo=1.0~rc1", true},
		{"foo=2:1.0-1-1", true}, // hyphens in upstream are fine with a revision
		{"foo=1.0:2", false},    // a colon needs an epoch
		{"foo=1-2-a_b", false},
		{"x", false},     // at least two characters
		{"JQ", false},    // lower case only
		{"-jq", false},   // must start alphanumeric
		{"jq;rm", false}, // shell metacharacters
		{"jq rm", false}, // no spaces
		{"jq\nvim", false},
		{"$(id)", false},
		{"`id`", false},
		{"jq&&id", false},
		{"jq|id", false},
		{"jq>x", false},
		{"jq*", false},
		{"jq=", false},
		{"jq=a1", false}, // upstream starts with a digit
		{"jq=1.0-", false},
		{"jq=x:1.0", false},
		{"jq=1.0 ", false},
		{"jq=1.0;id", false},
		{"jq=$(id)", false},
		{"", false},
		{strings.Repeat("a", MaxPackageLength+1), false},
	} {
		_, err := ParseAptPackage(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseAptPackage(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if err != nil && errdefs.Classify(err) != errdefs.ErrInvalidArgument {
			t.Errorf("ParseAptPackage(%q): class %v, want invalid argument", tc.in, errdefs.Classify(err))
		}
	}
}

func TestRequirements(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // canonical form; "" when invalid
	}{
		{"requests", "requests"},
		{"Requests==2.31.0", "requests==2.31.0"},
		{"zope.interface>=5", "zope-interface>=5"},
		{"Foo_Bar", "foo-bar"},
		{"numpy>=1.26,<2", "numpy>=1.26,<2"},
		{"numpy >= 1.26 , < 2", "numpy>=1.26,<2"},
		{"requests[socks,security]==2.31", "requests[socks,security]==2.31"},
		{"pkg~=1.4", "pkg~=1.4"},
		{"pkg~=1.4.2", "pkg~=1.4.2"},
		{"pkg!=1.5.*", "pkg!=1.5.*"},
		{"pkg==1.0rc1", "pkg==1.0rc1"},
		{"pkg==1.0.post2.dev3", "pkg==1.0.post2.dev3"},
		{"pkg==1!2.0", "pkg==1!2.0"},
		{"pkg==1.0+local.7", "pkg==1.0+local.7"},
		{"pkg===1.0-weird", "pkg===1.0-weird"},
		{"pkg>1,<=3,!=2.5", "pkg>1,<=3,!=2.5"},
		{"pkg~=1", ""},            // ~= needs two segments
		{"pkg>=1.0+local", ""},    // local versions only with == and !=
		{"pkg==1.*+x", ""},        //
		{"pkg=1.0", ""},           // one = is not pip's
		{"pkg==", ""},             //
		{"pkg==abc", ""},          //
		{"pkg @ https://x/y", ""}, // direct references
		{"pkg; python_version<'3'", ""},
		{"-e .", ""},
		{"--index-url=http://evil/", ""},
		{"-r /etc/passwd", ""},
		{"pkg==1.0 --hash=sha256:00", ""},
		{"pkg\n--index-url http://evil", ""},
		{"pkg==1.0;id", ""},
		{"pkg==$(id)", ""},
		{"pkg`id`", ""},
		{"pkg|id", ""},
		{"pkg[", ""},
		{"pkg[a b]", ""},
		{"_pkg", ""},
		{"pkg-", ""},
		{"", ""},
		{"./local/path", ""},
		{"https://x/y.whl", ""},
	} {
		req, err := ParseRequirement(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseRequirement(%q) = %q, want an error", tc.in, req)
			} else if errdefs.Classify(err) != errdefs.ErrInvalidArgument {
				t.Errorf("ParseRequirement(%q): class %v, want invalid argument", tc.in, errdefs.Classify(err))
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRequirement(%q): %v", tc.in, err)
			continue
		}
		if req.String() != tc.want {
			t.Errorf("ParseRequirement(%q) = %q, want %q", tc.in, req, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Spec)
		field  string // in the message; "" when valid
	}{
		{"good", func(*Spec) {}, ""},
		{"no packages", func(s *Spec) { s.AptPackages, s.PythonPackages = nil, nil }, ""},
		{"digest base", func(s *Spec) {
			s.BaseImage = "debian@sha256:" + strings.Repeat("a", 64)
		}, ""},
		{"registry base", func(s *Spec) { s.BaseImage = "127.0.0.1:5000/team/base:v1" }, ""},
		{"python version", func(s *Spec) { s.PythonVersion = "3.11" }, ""},
		{"no owner", func(s *Spec) { s.OwnerID = " " }, "owner_id"},
		{"no name", func(s *Spec) { s.Name = "" }, "name"},
		{"bad name", func(s *Spec) { s.Name = "../x" }, "name"},
		{"no base", func(s *Spec) { s.BaseImage = "" }, "base_image"},
		{"upper-case base", func(s *Spec) { s.BaseImage = "Debian" }, "base_image"},
		{"base with shell", func(s *Spec) { s.BaseImage = "debian;rm -rf /" }, "base_image"},
		{"base with newline", func(s *Spec) { s.BaseImage = "debian\nRUN id" }, "base_image"},
		{"base with space", func(s *Spec) { s.BaseImage = "debian AS x" }, "base_image"},
		{"bad python version", func(s *Spec) { s.PythonVersion = "3.11; id" }, "python_version"},
		{"python 2", func(s *Spec) { s.PythonVersion = "2.7" }, "python_version"},
		{"bad apt", func(s *Spec) { s.AptPackages = []string{"jq", "a;b"} }, "apt_packages[1]"},
		{"duplicate apt", func(s *Spec) { s.AptPackages = []string{"jq", "jq=1.6-2.1"} }, "apt_packages[1]"},
		{"bad pip", func(s *Spec) { s.PythonPackages = []string{"x y"} }, "python_packages[0]"},
		{"duplicate pip", func(s *Spec) { s.PythonPackages = []string{"Foo", "foo_"} }, "python_packages"},
		{"duplicate pip by normalisation", func(s *Spec) { s.PythonPackages = []string{"foo.bar", "Foo-Bar>1"} }, "python_packages[1]"},
		{"too many", func(s *Spec) { s.AptPackages = make([]string, MaxPackages+1) }, "apt_packages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.modify(&s)
			err := Validate(s)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", s)
			}
			if errdefs.Classify(err) != errdefs.ErrInvalidArgument || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Validate = %v (class %v), want an invalid argument naming %s", err, errdefs.Classify(err), tc.field)
			}
		})
	}
}

func TestRecipeNormalisesAndHashes(t *testing.T) {
	a := Spec{OwnerID: "alice", Name: "one", BaseImage: "debian",
		AptPackages: []string{"jq", "curl"}, PythonPackages: []string{"Requests>=2", "numpy"}}
	b := Spec{OwnerID: "bob", Name: "two", BaseImage: "docker.io/library/debian:latest",
		AptPackages: []string{"curl", "jq"}, PythonPackages: []string{"numpy", "requests >= 2"}}
	ra, err := NewRecipe(a, "http://127.0.0.1:9/simple/")
	if err != nil {
		t.Fatal(err)
	}
	rb, err := NewRecipe(b, "http://127.0.0.1:9/simple/")
	if err != nil {
		t.Fatal(err)
	}
	if ra.Tag() != rb.Tag() {
		t.Errorf("equal recipes got different tags %s and %s:\n%+v\n%+v", ra.Tag(), rb.Tag(), ra, rb)
	}
	rc, _ := NewRecipe(b, "http://127.0.0.1:10/simple/")
	if rc.Tag() == rb.Tag() {
		t.Error("another index gave the same tag")
	}
	b.AptPackages = append(b.AptPackages, "vim")
	rd, _ := NewRecipe(b, "http://127.0.0.1:9/simple/")
	if rd.Tag() == rb.Tag() {
		t.Error("another package list gave the same tag")
	}
	noPip := Spec{OwnerID: "a", Name: "n", BaseImage: "debian", AptPackages: []string{"jq"}}
	r1, _ := NewRecipe(noPip, "http://a/simple/")
	r2, _ := NewRecipe(noPip, "http://b/simple/")
	if r1.Tag() != r2.Tag() {
		t.Error("the index changed the tag of a recipe without Python packages")
	}
	if !strings.HasPrefix(ra.Tag(), ImageRepository+":") {
		t.Errorf("tag %s is not in %s", ra.Tag(), ImageRepository)
	}
	if _, err := NewRecipe(a, "file:///etc"); err == nil {
		t.Error("a file: index URL was accepted")
	}
}

func TestContextIsReproducibleAndCarriesNoSpecText(t *testing.T) {
	s := good()
	s.PythonPackages = []string{"requests[socks]>=2.31"}
	r, err := NewRecipe(s, "http://127.0.0.1:8080/simple/")
	if err != nil {
		t.Fatal(err)
	}
	c1, err := r.Context()
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := r.Context()
	if !bytes.Equal(c1, c2) {
		t.Error("the same recipe gave two different contexts")
	}
	files := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(c1))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		files[h.Name] = string(body)
	}
	df := files["Dockerfile"]
	if strings.Contains(df, "jq") || strings.Contains(df, "requests") {
		t.Errorf("package names reached the Dockerfile:\n%s", df)
	}
	for _, want := range []string{"FROM stacyvm/debian:test\n", "WORKDIR /workspace\n"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q:\n%s", want, df)
		}
	}
	if got := files["stacyvm-env/apt-packages.txt"]; got != "jq\n" {
		t.Errorf("apt-packages.txt = %q", got)
	}
	wantReq := "--index-url http://127.0.0.1:8080/simple/\n--trusted-host 127.0.0.1\nrequests[socks]>=2.31\n"
	if got := files["stacyvm-env/requirements.txt"]; got != wantReq {
		t.Errorf("requirements.txt = %q, want %q", got, wantReq)
	}
	if !strings.Contains(files["stacyvm-env/apt.sh"], "--no-install-recommends") ||
		!strings.Contains(files["stacyvm-env/apt.sh"], "rm -rf /var/lib/apt/lists/*") {
		t.Errorf("apt.sh does not skip recommends and clean the lists:\n%s", files["stacyvm-env/apt.sh"])
	}
}
